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
from pathlib import Path

import luigi

from pipeline.quality import results
from pipeline.store import cache
from tasks import graph
from tasks.base import Stage
from tasks.config import gtforge
from tasks.evaluate import EvaluateTargets, MeasureTruth
from tasks.write_manifest import WriteManifest

REPORT_DIR = "report"
HISTORY = "builds.jsonl"  # in the Report stage root: one line per report built


class Report(Stage):
    version = 2  # 2: the vote margins of every candidate
    global_settings = ("scale", "preset")
    samples = luigi.OptionalIntParameter(default=None)
    tile = luigi.OptionalIntParameter(default=None)

    def requires(self):
        config, deps = gtforge(), {"shards": WriteManifest()}
        if config.references:
            deps["truth"] = MeasureTruth()
            if config.evaluate:
                deps["evaluation"] = EvaluateTargets()
        return deps

    @property
    def history_file(self) -> Path:
        return self.stage_root / HISTORY

    def upstream(self) -> list[tuple[Stage, Path]]:
        """Every completed stage this report depends on, inputs first, with its folder."""
        return [(t, t.out_dir) for t in graph.walk(self)
                if isinstance(t, Stage) and t is not self and cache.is_complete(t.out_dir)]

    def build(self, out: Path) -> dict:
        # h5py, cv2 and matplotlib load only when a report is built
        from pipeline.report import assemble, gather, html

        inputs, config = self.input_stages(), gtforge()
        upstream = [gather.done(graph.label(stage), stage.get_task_family(), stage.key, folder)
                    for stage, folder in self.upstream()]
        truth = results.load_truth(inputs["truth"].out_dir) if "truth" in inputs else None
        evaluation = (results.load_evaluation(inputs["evaluation"].out_dir)
                      if "evaluation" in inputs else None)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            data = assemble.report_data(
                f"gtforge build {self.key}", upstream, self.settings, config.candidates,
                config.input_dir, self.history_file, truth, evaluation, Path(tmp))
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
