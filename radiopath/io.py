"""Atomic file writes: a reader never sees a half-written file.

Every stage writes its outputs through these helpers. Data goes to a temporary
file in the destination folder, is flushed to disk, and is then renamed over the
destination with :func:`os.replace`, which is atomic on POSIX file systems.
A crash therefore leaves either the old file, the new file, or a stray
``.tmp-*`` file that no reader looks at (:func:`is_temporary`). A failed write
(disk full, read-only folder) removes its temporary file and raises an
:class:`OSError` that names the destination; the old file stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

import pandas as pd
import torch


TEMP_PREFIX = ".tmp-"


def is_temporary(path: str | os.PathLike) -> bool:
    """True for the leftover of an interrupted atomic write, which readers must skip."""
    return Path(path).name.startswith(TEMP_PREFIX)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix); renamed onto ``path`` on success.

    For libraries that write by file name (SimpleITK picks the format from the
    extension). The file gets the usual permissions (0666 minus the umask).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=f"-{path.name}")
    except OSError as error:
        raise _naming(error, path) from error
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.errno is not None:
            raise _naming(error, path) from error
        raise


def _naming(error: OSError, path: Path) -> OSError:
    """The same kind of error, saying which file could not be written (disk full, read-only, ...)."""
    return type(error)(error.errno, f"cannot write {path}: {error.strerror or error}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it onto ``path`` on success."""
    encoding = None if "b" in mode else "utf-8"  # never the locale's: reports carry µ, ±, ↑
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_write_csv(frame: pd.DataFrame, path: str | os.PathLike, **kwargs) -> None:
    """Write a DataFrame as CSV atomically (no index unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_write(path, "w") as handle:
        frame.to_csv(handle, **kwargs)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def atomic_save_figure(fig, path: str | os.PathLike, dpi: int) -> Path:
    """Save a matplotlib figure as PNG atomically, close it, and return ``path``."""
    import matplotlib.pyplot as plt  # here, so that importing radiopath.io does not load matplotlib

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return Path(path)
