"""Report: one self-contained HTML page about a build, gathered from the upstream stage folders.

Nothing here names an upstream stage except the ones it requires: the Report walks the DAG
(requires()) and hands every completed stage folder to pipeline.report, which takes what each
holds through the module that owns the file: shards (pipeline.shards), score tables
(pipeline.quality.scores), training curves (pipeline.train.curve), LR statistics
(pipeline.quality.lr_stats), rejected inputs (pipeline.image.ingest), the pictures a stage drew
(*.png, figures/*.png), and every stage's manifest for timings and cache hits.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import luigi

from pipeline.quality import results
from pipeline.report import figures, gather, html, samples, tables
from pipeline.store import cache
from tasks import graph
from tasks.base import Stage
from tasks.config import gtforge
from tasks.evaluate import EvaluateTargets, MeasureTruth
from tasks.write_shards import WriteShards

REPORT_DIR = "report"
HISTORY = "builds.jsonl"  # in the Report stage root: one line per report built


class Report(Stage):
    version = 1
    global_settings = ("scale", "preset")
    samples = luigi.OptionalIntParameter(default=None)
    tile = luigi.OptionalIntParameter(default=None)

    def requires(self):
        config, deps = gtforge(), {"shards": WriteShards()}
        if config.references:
            deps["truth"] = MeasureTruth()
            if config.evaluate:
                deps["evaluation"] = EvaluateTargets()
        return deps

    @property
    def history_file(self) -> Path:
        return self.stage_root / HISTORY

    def upstream(self) -> list[gather.Done]:
        """Every completed stage this report depends on, inputs first, with its files."""
        return [gather.Done(graph.label(t), t.get_task_family(), t.key, t.out_dir,
                            gather.listing(t.out_dir))
                for t in graph.walk(self)
                if isinstance(t, Stage) and t is not self and cache.is_complete(t.out_dir)]

    def quality(self) -> dict[str, list[html.Table]]:
        """The truth and evaluation tables when those stages are inputs (else nothing)."""
        inputs = self.input_stages()
        truth = results.load_truth(inputs["truth"].out_dir) if "truth" in inputs else None
        evaluation = (results.load_evaluation(inputs["evaluation"].out_dir)
                      if "evaluation" in inputs else None)
        return tables.quality_tables(truth, evaluation)

    def page(self, upstream: list[gather.Done], tmp: Path) -> html.ReportData:
        s, config = self.settings, gtforge()
        shards = [path for _, path in gather.files_named(upstream, "shard-*.h5")]
        data = html.ReportData(
            title=f"gtforge build {self.key}", created=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            summary=gather.build_facts(upstream, s, config.candidates, config.input_dir),
            samples=samples.sample_rows(shards, s["samples"], s["tile"]),
            rejects=gather.rejects(upstream),
            stages=gather.stage_rows(upstream, gather.previous_report_time(self.history_file)),
            notes=["A stage counts as reused (a cache hit) when its output was published before "
                   "the previous report of this workdir was built."],
            tables=self.quality())
        data.figures["Training curves"] = figures.curve_figures(upstream, tmp)
        data.figures["Scores and labels"] = figures.score_figures(upstream)
        data.figures["Colour shift (CIEDE2000 ΔE)"] = figures.delta_e_figures(upstream)
        for stage, figs in figures.stage_figures(upstream).items():
            data.figures[f"Figures: {stage}"] = figs
        data.figures = {k: v for k, v in data.figures.items() if v}
        return data

    def build(self, out: Path) -> dict:
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            data = self.page(self.upstream(), Path(tmp))
        (out / REPORT_DIR).mkdir()
        (out / REPORT_DIR / "index.html").write_text(html.render_html(data), encoding="utf-8")
        facts = {"samples": len(data.samples), "rejects": len(data.rejects),
                 "figures": sum(len(v) for v in data.figures.values()),
                 "stage_count": len(data.stages),
                 "reused": sum(bool(r.reused) for r in data.stages)}
        (out / REPORT_DIR / "report.json").write_text(json.dumps(
            {**facts, "stages": [{**r.__dict__} for r in data.stages], "rejects": data.rejects},
            indent=1, default=str, ensure_ascii=True))
        gather.append_history(self.history_file, self.key)
        return facts
