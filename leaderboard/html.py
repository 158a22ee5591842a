"""One self-contained HTML page: inline CSS, PNGs as base64 data URIs, a small inline
script that sorts tables by clicking their headers. No external resource is referenced,
so the file opens offline and survives being mailed or logged to MLflow.

The script also marks, once the page has loaded, every image with
``data-rendered="yes|no"`` (``complete && naturalWidth > 0``) and ``<body>`` with
``data-images-rendered="OK/TOTAL"``, and every sortable table with
``data-sortable="ready"``: a headless browser's ``--dump-dom`` then shows whether the
page really rendered.
"""

from __future__ import annotations

import base64
from html import escape

from snnbench.leaderboard.document import Block, Document, Figures, Paragraph, Section, Table

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d8dce3; --best:#dff3e3; --bestfg:#0b5d1e; --ref:#f4f6f9;
        --paper:#fbf6e9; --paperline:#e2c77a; --fail:#fdecec; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1360px; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 22px 0 6px; }
p { margin: 6px 0; } .note, .legend { color: var(--muted); font-size: 12.5px; }
.paper-note { color: #6b5200; font-size: 12.5px; }
nav a { margin-right: 14px; }
.badge { display: inline-block; font-size: 11px; font-weight: 600; padding: 1px 7px; border-radius: 9px;
         background: var(--paperline); color: #4a3700; vertical-align: middle; margin-left: 6px; }
.scroll { overflow-x: auto; margin: 6px 0 4px; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { border: 1px solid var(--line); padding: 3px 7px; white-space: nowrap; }
th { background: #eef1f5; position: sticky; top: 0; text-align: left; vertical-align: bottom; white-space: normal;
     min-width: 56px; max-width: 190px; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #9aa3b2; font-size: 10px; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; color: var(--fg); }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; color: var(--fg); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { background: var(--best); color: var(--bestfg); font-weight: 700; }
tr.reference td { background: var(--ref); font-style: italic; }
tr.pareto td:last-child { font-weight: 700; }
table.paper { border: 2px solid var(--paperline); } table.paper td { background: var(--paper); }
td.note { white-space: normal; min-width: 260px; max-width: 520px; color: var(--muted); }
tr.failed td { background: var(--fail); } td.error { white-space: normal; font-family: ui-monospace, monospace; }
caption { caption-side: top; text-align: left; color: var(--muted); padding: 2px 0; white-space: nowrap; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 6px 0; } figure img { max-width: 640px; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; max-width: 640px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""

SCRIPT = """
(function () {
  function sortKey(cell, numeric) {
    var v = cell ? cell.getAttribute('data-sort') : null;
    if (v === null || v === '') return null;
    return numeric ? parseFloat(v) : v.toLowerCase();
  }
  function sortBy(table, th, col) {
    var numeric = th.getAttribute('data-type') === 'num';
    var ascending = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('thead th').forEach(function (other) { other.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortKey(a.cells[col], numeric), y = sortKey(b.cells[col], numeric);
      if (x === null && y === null) return 0;
      if (x === null) return 1;            /* blanks last in both directions */
      if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (th, col) {
      th.tabIndex = 0;
      th.addEventListener('click', function () { sortBy(table, th, col); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(table, th, col); }
      });
    });
    table.setAttribute('data-sortable', 'ready');
  });
  window.addEventListener('load', function () {
    var images = document.images, ok = 0;
    for (var i = 0; i < images.length; i++) {
      var good = images[i].complete && images[i].naturalWidth > 0;
      images[i].setAttribute('data-rendered', good ? 'yes' : 'no');
      if (good) ok++;
    }
    document.body.setAttribute('data-images-rendered', ok + '/' + images.length);
  });
})();
"""


def _table(table: Table) -> str:
    classes = ["lb", table.kind] + (["sortable"] if table.sortable else [])
    out = [f'<div class="scroll"><table id="{escape(table.table_id)}" class="{" ".join(classes)}">']
    if table.caption:
        out.append(f"<caption>{escape(table.caption)}</caption>")
    out.append("<thead><tr>")
    for header, numeric in zip(table.headers, table.numeric):
        kind = "num" if numeric else "text"
        out.append(f'<th scope="col" data-type="{kind}">{escape(header)}</th>')
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(table.rows):
        css = table.row_classes[i] if i < len(table.row_classes) else ""
        out.append(f'<tr class="{escape(css)}">' if css else "<tr>")
        for header, numeric, cell in zip(table.headers, table.numeric, row):
            classes = [c for c in ("num" if numeric else "", "best" if cell.best else "",
                                   "note" if header == "note" else "", "error" if header == "error" else "") if c]
            attr = f' class="{" ".join(classes)}"' if classes else ""
            text = f"<strong>{escape(cell.text)}</strong>" if cell.best else escape(cell.text)
            out.append(f'<td{attr} data-sort="{escape(cell.sort)}">{text}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _figures(figures: Figures) -> str:
    out = ['<div class="figures">']
    for image in figures.images:
        data = base64.b64encode(image.path.read_bytes()).decode("ascii")
        out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{escape(image.alt)}">'
                   f"<figcaption>{escape(image.caption)}</figcaption></figure>")
    out.append("</div>")
    return "".join(out)


def _block(block: Block) -> str:
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Paragraph):
        css = f' class="{escape(block.css)}"' if block.css else ""
        return f"<p{css}>{escape(block.text)}</p>"
    if isinstance(block, Figures):
        return _figures(block)
    if isinstance(block, Section):
        return _section(block)
    raise TypeError(f"unknown block {type(block).__name__}")


def _section(section: Section) -> str:
    level = min(max(section.level, 2), 4)
    badge = f'<span class="badge">{escape(section.badge)}</span>' if section.badge else ""
    body = "".join(_block(b) for b in section.blocks)
    return (f'<section id="{escape(section.anchor)}"><h{level}>{escape(section.title)}{badge}</h{level}>'
            f"{body}</section>")


def render_html(doc: Document) -> str:
    """The whole page as one string."""
    nav = " ".join(f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in doc.sections)
    intro = "".join(_block(p) for p in doc.intro)
    body = "".join(_section(s) for s in doc.sections)
    footer = f"<footer>{escape(doc.footer)}</footer>" if doc.footer else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(doc.title)}</title><style>{CSS}</style></head>\n"
            f"<body><header><h1>{escape(doc.title)}</h1>{intro}<nav>{nav}</nav></header>\n"
            f"{body}\n{footer}<script>{SCRIPT}</script></body></html>\n")
