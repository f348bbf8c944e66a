"""The build report as one self-contained HTML page (every picture an embedded PNG, no script).

Pure: `render_html(ReportData)` returns the page. The pictures are drawn by
pipeline.image.plots, the data gathered from stage folders by pipeline.report.gather.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.image.plots import LABEL_COLOURS, LABEL_NAMES
from pipeline.store.cache import human_size
from pipeline.store.imageio import encode_png


@dataclass
class Tile:
    """One picture of a sample row: `rgb` uint8 HWC; `label` +1/0/-1 or None; `note` a caption."""

    name: str
    rgb: np.ndarray
    label: int | None = None
    note: str = ""


@dataclass
class SampleRow:
    title: str
    tiles: list[Tile]


@dataclass
class Figure:
    title: str
    png: bytes
    caption: str = ""


@dataclass
class StageRow:
    """One stage of the build: seconds it took when it was computed, whether this build reused
    it from the cache, its size on disk and its settings."""

    family: str
    key: str
    seconds: float | None
    published: str | None
    reused: bool | None
    bytes: int
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Table:
    """A table of text cells: `header` (columns) and `rows`, under a title, with a caption."""

    title: str
    header: list[str]
    rows: list[list[object]]
    caption: str = ""


@dataclass
class ReportData:
    title: str
    created: str
    summary: dict[str, Any] = field(default_factory=dict)
    samples: list[SampleRow] = field(default_factory=list)
    # Section title -> figures, in page order (training curves, score histograms, masks, ...).
    figures: dict[str, list[Figure]] = field(default_factory=dict)
    rejects: list[dict[str, str]] = field(default_factory=list)
    stages: list[StageRow] = field(default_factory=list)
    # Section title -> tables (the quality measured against clean references), after the summary.
    tables: dict[str, list[Table]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the page

def escaped(value: object) -> str:
    """HTML-escaped text; file names that are not UTF-8 show their bytes as \\xNN."""
    s = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return html.escape(s)


def _img(png: bytes, alt: str, style: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    css = f' style="{style}"' if style else ""
    return f'<img{css} alt="{escaped(alt)}" src="data:image/png;base64,{data}">'


def _seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 18px 40px;
color:#1f2328}
h1{font-size:22px;margin:18px 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
nav a{margin-right:12px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #d0d7de;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right}
.row{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 14px}
.tile{display:flex;flex-direction:column;align-items:center;font-size:12px}
.tile img{image-rendering:pixelated;border:3px solid #d0d7de}
.fig{display:inline-block;margin:0 14px 14px 0;vertical-align:top;font-size:12px;max-width:100%}
.fig img{max-width:100%}
.muted{color:#6e7781}code{font-size:12px}details{font-size:12px}
"""


def _summary_html(data: ReportData) -> str:
    rows = "".join(f"<tr><th>{escaped(k)}</th><td>{escaped(v)}</td></tr>"
                   for k, v in data.summary.items())
    return f"<table>{rows}</table>" if rows else ""


def _samples_html(samples: Sequence[SampleRow]) -> str:
    if not samples:
        return '<p class="muted">No samples: this build wrote no shards.</p>'
    out = []
    for row in samples:
        tiles = []
        for t in row.tiles:
            colour = LABEL_COLOURS.get(t.label, "#d0d7de") if t.label is not None else "#d0d7de"
            label = f" <b style='color:{colour}'>{LABEL_NAMES[t.label]}</b>" \
                if t.label is not None else ""
            width = max(t.rgb.shape[1], 160)  # small patches enlarged (pixelated), not blurred
            img = _img(encode_png(t.rgb), t.name, style=f"border-color:{colour};width:{width}px")
            tiles.append(f"<div class='tile'>{img}<span>{escaped(t.name)}{label}</span>"
                         f"<span class='muted'>{escaped(t.note)}</span></div>")
        out.append(f"<h3>{escaped(row.title)}</h3><div class='row'>{''.join(tiles)}</div>")
    return "".join(out)


def _figures_html(figures: Sequence[Figure]) -> str:
    return "".join(f"<div class='fig'>{_img(f.png, f.title)}<div><b>{escaped(f.title)}</b> "
                   f"<span class='muted'>{escaped(f.caption)}</span></div></div>" for f in figures)


def _tables_html(tables: Sequence[Table]) -> str:
    out = []
    for t in tables:
        head = "".join(f"<th>{escaped(h)}</th>" for h in t.header)
        rows = "".join("<tr>" + "".join(f"<td>{escaped(c)}</td>" for c in row) + "</tr>"
                       for row in t.rows)
        out.append(f"<h3>{escaped(t.title)}</h3><table><tr>{head}</tr>{rows}</table>"
                   f"<p class='muted'>{escaped(t.caption)}</p>")
    return "".join(out)


def _rejects_html(rejects: Sequence[Mapping[str, str]]) -> str:
    if not rejects:
        return "<p>No input file was rejected.</p>"
    rows = "".join(f"<tr><td><code>{escaped(r.get('source', ''))}</code></td>"
                   f"<td>{escaped(r.get('reason', ''))}</td></tr>" for r in rejects)
    return f"<table><tr><th>file</th><th>reason</th></tr>{rows}</table>"


def _stages_html(stages: Sequence[StageRow]) -> str:
    if not stages:
        return ""
    rows = []
    for s in stages:
        cached = {True: "reused (cache hit)", False: "built", None: "–"}[s.reused]
        settings = json.dumps(dict(s.settings), sort_keys=True, indent=1)
        rows.append(
            f"<tr><td>{escaped(s.family)}</td><td><code>{escaped(s.key)}</code></td>"
            f"<td>{cached}</td><td class='n'>{_seconds(s.seconds)}</td>"
            f"<td>{escaped(s.published or '–')}</td><td class='n'>{human_size(s.bytes)}</td>"
            f"<td><details><summary>settings</summary><pre>{escaped(settings)}</pre></details></td></tr>")
    built = [s for s in stages if s.reused is False]
    reused = [s for s in stages if s.reused]
    total = (f"<p>{len(built)} stages built ({_seconds(sum(s.seconds or 0 for s in built))}), "
             f"{len(reused)} reused from the cache (saving "
             f"{_seconds(sum(s.seconds or 0 for s in reused))}).</p>")
    every = ("<table><tr><th>stage</th><th>key</th><th>this build</th><th>time</th>"
             "<th>published</th><th>size</th><th></th></tr>" + "".join(rows) + "</table>")
    return (total + _stage_summary_html(stages) + f"<details><summary>every task "
            f"({len(stages)})</summary>{every}</details>")


def _stage_summary_html(stages: Sequence[StageRow]) -> str:
    """A row per stage (its label, which its chunks share: tasks.graph.label): its tasks (one
    per chunk for a per-photo stage), how many were built and reused, their summed and longest
    time, their size."""
    families: dict[str, list[StageRow]] = {}
    for s in stages:
        families.setdefault(s.family, []).append(s)
    rows = "".join(
        f"<tr><td>{escaped(name)}</td><td class='n'>{len(group)}</td>"
        f"<td class='n'>{sum(s.reused is False for s in group)}</td>"
        f"<td class='n'>{sum(bool(s.reused) for s in group)}</td>"
        f"<td class='n'>{_seconds(sum(s.seconds or 0 for s in group))}</td>"
        f"<td class='n'>{_seconds(max(s.seconds or 0 for s in group))}</td>"
        f"<td class='n'>{human_size(sum(s.bytes for s in group))}</td></tr>"
        for name, group in families.items())
    return ("<table><tr><th>stage</th><th>tasks</th><th>built</th><th>reused</th>"
            "<th>time, all tasks</th><th>longest task</th><th>size</th></tr>" + rows + "</table>")


def render_html(data: ReportData) -> str:
    """The whole page: summary, sample patches, figure sections, rejects, stages."""
    sections = [("summary", "Summary", _summary_html(data)
                 + "".join(f"<p class='muted'>{escaped(n)}</p>" for n in data.notes)),
                ("samples", "Sample patches", _samples_html(data.samples))]
    for i, (title, tables) in enumerate(data.tables.items()):
        sections.insert(1 + i, (f"table{i}", title, _tables_html(tables)))
    for i, (title, figs) in enumerate(data.figures.items()):
        sections.append((f"fig{i}", title, _figures_html(figs)))
    sections += [("rejects", f"Rejected inputs ({len(data.rejects)})", _rejects_html(data.rejects)),
                 ("stages", "Stages: timings and cache hits", _stages_html(data.stages))]
    nav = "".join(f"<a href='#{sid}'>{escaped(title)}</a>" for sid, title, _ in sections)
    body = "".join(f"<h2 id='{sid}'>{escaped(title)}</h2>{content}"
                   for sid, title, content in sections)
    return ("<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escaped(data.title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escaped(data.title)}</h1><p class='muted'>{escaped(data.created)}</p>"
            f"<nav>{nav}</nav>{body}</body></html>\n")
