"""HTML building blocks of the report: one static page, no scripts, opens from disk."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import pandas as pd

from radiopath.report.table import column_title

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { background: #e6f2e6; } tr.group-start td { border-top: 2px solid #888; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; } .grid { display: flex; flex-wrap: wrap; gap: 1em; }
.grid figure { flex: 1 1 380px; max-width: 620px; } ul.notes li { color: #8a4b00; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
nav a { margin-right: 1em; }
"""


def escape(value) -> str:
    return html.escape(str(value))


def image(path: Path, report_dir: Path, embed: bool, caption: str = "") -> str:
    """A figure: ``figures/...`` relative to the report, or the PNG inline as base64."""
    if embed:
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        src = Path(os.path.relpath(path, report_dir)).as_posix()
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{escape(src)}" alt="{escape(caption or path.stem)}">{cap}</figure>'


def notes(items: list[str]) -> str:
    """A list of missing pieces and warnings (empty string when there are none)."""
    if not items:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>"


def simple_table(frame: pd.DataFrame) -> str:
    """A plain HTML table of ``frame`` (index left out)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def comparison_table(table: pd.DataFrame, metrics: dict) -> str:
    """Table 1: survival model cells spanning their aggregators, best cells bold and shaded."""
    head = "<th>Survival model</th><th>Aggregator</th>" + "".join(
        f"<th>{escape(column_title(spec))}</th>" for spec in metrics.values()
    )
    rows = []
    sizes = table.groupby("survival_model", sort=False).size()
    previous = None
    for _, row in table.iterrows():
        model = row["survival_model"]
        first = model != previous
        previous = model
        cells = f'<td rowspan="{sizes[model]}"><b>{escape(model)}</b></td>' if first else ""
        cells += f"<td>{escape(row['aggregator'])}</td>"
        for key in metrics:
            text = escape(row[f"{key}_cell"])
            if row[f"{key}_best"]:
                cells += f'<td class="num best"><strong>{text}</strong></td>'
            else:
                cells += f'<td class="num">{text}</td>'
        rows.append(f'<tr class="group-start">{cells}</tr>' if first else f"<tr>{cells}</tr>")
    return f'<table class="comparison"><tr>{head}</tr>{"".join(rows)}</table>'


def page(title: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: title, a link bar and ``(anchor, heading, body)`` sections."""
    nav = "".join(f'<a href="#{anchor}">{escape(heading)}</a>' for anchor, heading, _ in sections)
    body = "".join(f'<section id="{anchor}"><h2>{escape(heading)}</h2>{content}</section>'
                   for anchor, heading, content in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1><nav>{nav}</nav>{body}</body></html>\n"
    )
