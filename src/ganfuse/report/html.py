"""HTML pieces of the report: one self-contained page, images as ``data:`` URIs, inline CSS, no
script and no external link, so the file opens offline and can be mailed or archived as is.

All text from run folders is escaped here; callers pass plain strings.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 1rem 1.5rem 4rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 0.4rem; }
nav a { margin-right: 0.9rem; }
pre { background: #f6f6f8; padding: 0.7rem; overflow-x: auto; font-size: 0.8rem; max-height: 28rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.4rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.55rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f4; }
figure { display: inline-block; margin: 0.3rem 0.6rem 0.8rem 0; vertical-align: top; }
figcaption { font-size: 0.8rem; color: #555; text-align: center; }
img.pixel { image-rendering: pixelated; }
.note { color: #6b6b6b; font-style: italic; }
.charts { display: flex; flex-wrap: wrap; gap: 0.6rem; }
.charts img { width: calc(50% - 0.3rem); min-width: 420px; height: auto; }
.scroll { overflow-x: auto; }
details { margin: 0.4rem 0; }
summary { cursor: pointer; font-weight: 600; }
.meta { color: #555; font-size: 0.85rem; }
"""


@dataclass(frozen=True)
class Section:
    """A top-level part of the page; ``id`` is its anchor (``#curves``), ``body`` is HTML."""

    id: str
    title: str
    body: str


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(png: bytes, alt: str, caption: str | None = None, pixel: bool = False) -> str:
    """An embedded PNG, optionally in a captioned figure; ``pixel`` keeps upscaled pixels sharp."""
    cls = ' class="pixel"' if pixel else ""
    tag = f'<img src="{data_uri(png)}" alt="{esc(alt)}"{cls}>'
    if caption is None:
        return tag
    return f"<figure>{tag}<figcaption>{esc(caption)}</figcaption></figure>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def heading(text: str, level: int = 3) -> str:
    return f"<h{level}>{esc(text)}</h{level}>"


def preformatted(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def collapsible(summary: str, body: str, open_: bool = False) -> str:
    """A ``<details>`` block: long content folded away without any script."""
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def format_number(value: object) -> str:
    """Numbers to 4 significant decimals (integers as they are); anything else as text."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table whose numeric cells are right-aligned and formatted by :func:`format_number`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for value in row:
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            cls = ' class="num"' if numeric else ""
            cells.append(f"<td{cls}>{esc(format_number(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole document: title, a table of contents, then the sections in order."""
    nav = " ".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{esc(subtitle)}</p>',
        f"<nav>{nav}</nav>",
    ]
    for s in sections:
        parts.append(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}</section>')
    parts.append("</body></html>")
    return "\n".join(parts)
