"""``leaderboard.md``: the same document as the HTML page, as GitHub-flavoured Markdown.

Best values are **bold**; images are linked by file name (the PNGs sit next to the file).
"""

from __future__ import annotations

from snnbench.leaderboard.document import Block, Document, Figures, Paragraph, Section, Table


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(table: Table) -> list[str]:
    lines = []
    if table.caption:
        lines += [f"*{table.caption}*", ""]
    lines.append("| " + " | ".join(_escape(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---:" if n else "---" for n in table.numeric) + "|")
    for row in table.rows:
        cells = [f"**{_escape(c.text)}**" if c.best and c.text else _escape(c.text) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _block(block: Block) -> list[str]:
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Paragraph):
        return [block.text, ""]
    if isinstance(block, Figures):
        out = []
        for image in block.images:
            out += [f"![{image.alt}]({image.path.name})", "", f"*{image.caption}*", ""]
        return out
    if isinstance(block, Section):
        return _section(block)
    raise TypeError(f"unknown block {type(block).__name__}")


def _section(section: Section) -> list[str]:
    badge = f" `{section.badge}`" if section.badge else ""
    lines = ["#" * section.level + f" {section.title}{badge}", ""]
    for block in section.blocks:
        lines += _block(block)
    return lines


def render_markdown(doc: Document) -> str:
    """The whole document as Markdown text."""
    lines = [f"# {doc.title}", ""]
    for p in doc.intro:
        lines += [p.text, ""]
    for section in doc.sections:
        lines += _section(section)
    if doc.footer:
        lines += ["---", "", doc.footer, ""]
    return "\n".join(lines).rstrip() + "\n"
