"""A report's content from the completed stage folders of a build: every section of the page."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from pipeline.report import figures, gather, samples, tables
from pipeline.report.html import ReportData

REUSE_NOTE = ("A stage counts as reused (a cache hit) when its output was published before the "
              "previous report of this workdir was built.")


def report_data(title: str, upstream: list[gather.Done], settings: Mapping, candidates: str,
                input_dir: str, history: Path, truth: dict | None, evaluation: dict | None,
                tmp: Path) -> ReportData:
    """The page of a build: its facts, `settings["samples"]` sample rows of `settings["tile"]`
    px, rejected inputs, per-stage timings (cache hits since the report in `history`), the
    quality tables of the truth and evaluation results (either may be None) and the figure
    sections; curves without a picture of their own are drawn into `tmp`."""
    # a chunk's shards are also linked into the whole set's folder: each file once
    shards = list({path.name: path for _, path in gather.files_named(upstream, "shard-*.h5")}
                  .values())
    sizes = [gather.shard_samples(path) for path in shards]
    scored = gather.score_tables(upstream)
    data = ReportData(
        title=title, created=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        summary=gather.build_facts(upstream, settings, candidates, input_dir, sizes),
        samples=samples.sample_rows(shards, sizes, settings["samples"], settings["tile"]),
        rejects=gather.rejects(upstream),
        stages=gather.stage_rows(upstream, gather.previous_report_time(history)),
        notes=[REUSE_NOTE], tables={**tables.quality_tables(truth, evaluation),
                                    **tables.margin_tables(scored)})
    sections = {"Training curves": figures.curve_figures(upstream, tmp),
                "Scores and labels": figures.score_figures(scored),
                "Colour shift (CIEDE2000 ΔE)": figures.delta_e_figures(upstream)}
    sections.update({f"Figures: {stage}": figs
                     for stage, figs in figures.stage_figures(upstream).items()})
    data.figures = {k: v for k, v in sections.items() if v}
    return data
