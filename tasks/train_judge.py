"""TrainJudge: the learned annotators that label candidates (the neighbours annotator and the
pairwise judge; pipeline.quality, docs/ANNOTATION.md), learned from the corpus and the build's
own models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import luigi
import numpy as np

from pipeline.store import durable
from pipeline.store.imageio import image_path, read_rgb
from pipeline.store.seeding import rng
from tasks.config import FUSED
from tasks.fuse import FuseGT
from tasks.ingest import IngestHR
from tasks.judge_pool import BASES, INPUTS, SR_GENERATOR, VARIANTS, JudgePool, active_generators
from tasks.mask_generator import MODEL_FILE as CFMG_FILE
from tasks.mask_generator import TrainMaskGenerator, load_cfmg
from tasks.training import TrainingStage, training_inputs

if TYPE_CHECKING:
    import torch

    from models.judge import PairJudge
    from pipeline.quality.neighbours import GainTable

MODEL_FILE = "judge.pt"
NEIGHBOURS_FILE = "neighbours.npz"
POOL = "pool"

CALIBRATION_JSON = "calibration.json"


class TrainJudge(TrainingStage):
    """Train models.judge.PairJudge on pairs of an input (a cleaner corpus crop, degraded within
    `versions` or not) and a version made from it (by the `generators` — the build's
    enhancers, SR model and CFMG — or by one blur, noise, JPEG, sharpening, smoothing or rescaling
    step), then calibrate each head's margin on held-out (input, generator output) pairs, of
    every generator together and of each on its own. From the same pool, the neighbours
    annotator's table (pipeline.quality.neighbours) and its margins per sign. Writes judge.pt
    ({'state', 'width'}), neighbours.npz, calibration.json (margins in dB per head, per
    generator too, the pairs they were calibrated on, held-out accuracy; the neighbours'
    margins), curve.csv and curve.png."""

    version = 6  # 6: the pool from JudgePool (5: the neighbours annotator)
    # Luigi runs higher priorities (and their requirements) first: this training and what it
    # needs are the build's longest chain, so the other workers fill in around it.
    priority = 10
    bases = luigi.OptionalIntParameter(default=None)  # crops in the pool
    crop = luigi.OptionalIntParameter(default=None)  # judged side, pixels
    shrink = luigi.OptionalListParameter(default=None)  # base = crop of side/f, f in [lo, hi]
    versions = luigi.OptionalDictParameter(default=None)  # pipeline.quality.judge.VersionRanges
    generators = luigi.OptionalListParameter(default=None)  # enhancer candidates, "sr"
    iterations = luigi.OptionalIntParameter(default=None)
    batch_size = luigi.OptionalIntParameter(default=None)
    lr = luigi.OptionalFloatParameter(default=None)
    width = luigi.OptionalIntParameter(default=None)
    fresh_share = luigi.OptionalFloatParameter(default=None)  # of a batch: new pairs, no generator
    holdout = luigi.OptionalFloatParameter(default=None)  # share of bases kept for calibration
    precision = luigi.OptionalFloatParameter(default=None)  # of a vote, on held-out pairs
    neighbours = luigi.OptionalIntParameter(default=None)  # pairs the neighbours annotator averages
    ckpt_every = luigi.OptionalIntParameter(default=None, significant=False)

    def requires(self):
        """IngestHR (for the fresh pairs), JudgePool (the bases, inputs and the outputs of the
        `generators` that are active: tasks.judge_pool.active_generators) and, for "fused",
        TrainMaskGenerator."""
        s = self.settings
        deps = training_inputs(lambda chunk: {"hr": IngestHR(chunk=chunk)})
        deps[POOL] = JudgePool(bases=s["bases"], crop=s["crop"], shrink=s["shrink"],
                               versions=s["versions"],
                               generators=active_generators(s["generators"]))
        if FUSED in deps[POOL].generators:
            deps[FUSED] = TrainMaskGenerator()
        return deps

    def fingerprint(self) -> dict:
        """FuseGT's c, when the CFMG's fusions are a generator."""
        return {"fused_c": FuseGT().settings["c"]} if FUSED in self.requires() else {}

    def load_model(self, device: torch.device | str = "cpu") -> PairJudge:
        """The trained judge, in eval mode on `device`."""
        from models.judge import PairJudge
        from pipeline.quality.judge import HEADS
        from pipeline.train.loop import load_checkpoint

        payload = load_checkpoint(self.out_dir / MODEL_FILE, "cpu")
        model = PairJudge(width=int(payload["width"]), heads=len(HEADS))
        model.load_state_dict(payload["state"])
        return model.to(device).eval()

    def margins(self, candidate: str | None = None) -> dict[str, float]:
        """Calibrated vote margin of every head, in dB: {"psnr": ..., "ssim": ..., ...}: those
        of `candidate` when it was a generator (calibrated on its own outputs), else those
        of every generator's outputs together."""
        return self.candidate_margins([candidate])[candidate]

    def candidate_margins(self, candidates: list[str | None]) -> dict[str | None, dict]:
        """`margins` of each of `candidates` (None: the pooled ones), from one read of
        calibration.json."""
        found = json.loads((self.out_dir / CALIBRATION_JSON).read_text())
        own = found.get("candidate_margins", {})
        return {c: own.get(c, found["margins"]) for c in candidates}

    def gain_table(self) -> GainTable:
        """The neighbours annotator's table (pipeline.quality.neighbours)."""
        from pipeline.quality.neighbours import GainTable

        return GainTable.from_bytes((self.out_dir / NEIGHBOURS_FILE).read_bytes())

    def neighbour_margins(self, candidates: list[str]) -> dict[str, dict | None]:
        """The neighbours annotator's margins per sign for each candidate: {"positive": {head:
        net share}, "negative": {...}} of its generator; None for a candidate no generator
        made (the annotator does not judge it)."""
        found = json.loads((self.out_dir / CALIBRATION_JSON).read_text())["neighbour_margins"]
        return {c: found.get(c) for c in candidates}

    def _outputs(self, inputs: dict) -> dict[str, np.ndarray]:
        """Every active generator's outputs for the pool's inputs, by name in the pool's
        order: the enhancers' and the SR variants from JudgePool (one scale per input, drawn),
        the CFMG's fusions at FuseGT's c made here. `inputs`: input_stages()."""
        from pipeline.train import judge as JT
        from pipeline.train.cfmg import fuse_crops

        pool, found = inputs[POOL], {}
        for name in pool.generators:
            if name == SR_GENERATOR:
                found[name] = JT.sr_versions(pool.column(VARIANTS), rng(self.key, "sr scales"))
            elif name == FUSED:
                cfmg = inputs[FUSED]
                found[name] = fuse_crops(load_cfmg(cfmg.out_dir / CFMG_FILE, self.device),
                                         pool.column(INPUTS), pool.column(VARIANTS),
                                         FuseGT().settings["c"], cfmg.settings["crop"],
                                         self.device)
            else:
                found[name] = pool.column(name)
        return found

    def build(self, out: Path) -> dict:
        from pipeline.quality.judge import VersionRanges
        from pipeline.train import judge as JT
        from pipeline.train.loop import cpu_state, save_checkpoint

        s = self.settings
        images = [read_rgb(image_path(dirs["hr"], img.id))
                  for img, dirs in self.training_photos("hr")]
        ranges, shrink = VersionRanges(**s["versions"]), tuple(s["shrink"])
        inputs = self.input_stages()
        made, generators = inputs[POOL], self._outputs(inputs)
        pool = JT.build_pool(made.column(BASES), made.column(INPUTS), list(generators.values()),
                             ranges, JT.border(s["crop"]), rng(self.key, "processed"))
        train_rows, held_rows = JT.held_out_rows(len(pool.bases), s["holdout"])
        table, neighbour_margins = JT.neighbour_table(pool, train_rows, held_rows,
                                                      list(generators), s["neighbours"],
                                                      s["precision"])
        durable.write_bytes(out / NEIGHBOURS_FILE, table.to_bytes())
        training = JT.build_training(s["width"], s["lr"], s["iterations"], self.seed_for("init"),
                                     self.device, self.network_precision)
        fresh = int(round(s["fresh_share"] * s["batch_size"]))

        def step(i: int) -> dict[str, float]:
            return training.step(i, *JT.batch_pairs(
                rng(self.key, "batch", i), pool, train_rows, s["batch_size"], fresh, images,
                s["crop"], shrink, ranges))

        calibration = {"neighbour_margins": neighbour_margins}

        def save() -> None:
            calibration.update(JT.calibration(training.model, pool, held_rows, s["precision"],
                                              self.device, list(generators)))
            save_checkpoint(out / MODEL_FILE, {"state": cpu_state(training.model),
                                               "width": s["width"]})
            durable.write_json(out / CALIBRATION_JSON, calibration)

        self.train(out, training, step, s["iterations"], save, "TrainJudge")
        return {"pool": {"bases": len(pool.bases), "versions": pool.versions.shape[1]},
                **calibration}
