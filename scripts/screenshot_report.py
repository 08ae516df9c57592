"""Render a report's HTML page to a PNG with headless Chromium (for a quick look, or a test).

Usage::

    python scripts/screenshot_report.py REPORT_DIR/report.html report.png [--width 1400 --height 3000]

Chromium runs with a fresh throw-away profile and without any network service
(no sync, updates, QUIC or background requests): the page and its images are
local files.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from radiopath.io import atomic_path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def screenshot(html: Path, png: Path, width: int, height: int, chromium: str, timeout: float) -> None:
    """Write ``png``, a ``width`` x ``height`` rendering of the top of ``html``."""
    with tempfile.TemporaryDirectory(prefix="radiopath-chromium-") as profile, atomic_path(png) as tmp:
        command = [
            chromium,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={tmp.resolve()}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or tmp.stat().st_size == 0:
            raise RuntimeError(f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="report.html")
    parser.add_argument("png", type=Path, help="output PNG")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds before chromium is given up on")
    args = parser.parse_args(argv)
    if not args.html.is_file():
        parser.error(f"{args.html} does not exist")
    screenshot(args.html, args.png, args.width, args.height, args.chromium, args.timeout)
    print(f"screenshot in {args.png.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
