"""The report as a list of blocks, rendered once as Markdown and once as standalone HTML.

Markdown links the PNG files beside it; HTML carries the same figures inline (base64),
so the one file can be mailed or attached to a supplement. Text is plain (escaped in
HTML); tables are lists of strings.

>>> doc = [Heading(1, "Study report"), Paragraph("Synthetic data.")]
>>> to_markdown(doc).splitlines()[0]
'# Study report'
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Notice:
    """A boxed warning (synthetic data, research use)."""

    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    file: str  # the PNG's name inside the report folder
    png: bytes = field(repr=False)
    caption: str = ""


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Paragraph | Notice | Bullets | Table | Figure | Code


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Notice):
            lines += [f"> **{block.text}**", ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            if block.caption:
                lines += [f"*{block.caption}*", ""]
            lines.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Figure):
            lines += [f"![{block.caption}]({block.file})", "", f"*{block.caption}*", ""]
        elif isinstance(block, Code):
            lines += ["```", block.text.rstrip("\n"), "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
.notice { border: 2px solid #b00020; background: #fff3f3; padding: 0.6em 1em; font-weight: 600; }
figure { margin: 1em 0 2em; } img { max-width: 100%; }
figcaption, caption { font-style: italic; font-size: 0.9em; caption-side: top; text-align: left; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def to_html(blocks: list[Block], title: str) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            parts.append(f"<h{level}>{e(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{e(block.text)}</p>")
        elif isinstance(block, Notice):
            parts.append(f'<p class="notice">{e(block.text)}</p>')
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            caption = f"<caption>{e(block.caption)}</caption>" if block.caption else ""
            head = "".join(f"<th>{e(h)}</th>" for h in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            parts.append(
                f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            )
        elif isinstance(block, Figure):
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{e(block.caption)}">'
                f"<figcaption>{e(block.caption)}</figcaption></figure>"
            )
        elif isinstance(block, Code):
            parts.append(f"<pre>{e(block.text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
