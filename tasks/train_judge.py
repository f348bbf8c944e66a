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
from tasks.config import ENHANCER_CANDIDATES, FUSED, gtforge
from tasks.fuse import FuseGT
from tasks.ingest import IngestHR
from tasks.mask_generator import MODEL_FILE as CFMG_FILE
from tasks.mask_generator import TrainMaskGenerator, load_cfmg
from tasks.super_resolve import SR_SCALES, crop_variant, sr_model, variant_settings
from tasks.train_enhancer import TrainEnhancer
from tasks.training import TrainingStage, training_inputs

if TYPE_CHECKING:
    import torch

    from models.judge import PairJudge
    from pipeline.quality.neighbours import GainTable
    from pipeline.train.judge import Generator

MODEL_FILE = "judge.pt"
NEIGHBOURS_FILE = "neighbours.npz"
SR_GENERATOR = "sr"
VARIANTS = "variants"  # the SR model behind the fused generator's sources

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

    version = 5  # 5: the neighbours annotator (2: margins per generator)
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
        """IngestHR, and the models of the `generators` that are configured candidates (an
        enhancer name; "sr" for the SR model of the fused candidate's variants; "fused" for
        the CFMG and that SR model)."""
        names = gtforge().candidate_names()
        deps = training_inputs(lambda chunk: {"hr": IngestHR(chunk=chunk)})
        known = (*ENHANCER_CANDIDATES, SR_GENERATOR, FUSED)
        for name in self.settings["generators"]:
            if name in ENHANCER_CANDIDATES and name in names:
                backbone, degradation = name.split("_")
                deps[name] = TrainEnhancer(backbone=backbone, degradation=degradation)
            elif name == SR_GENERATOR and FUSED in names:
                deps[name] = sr_model()
            elif name == FUSED and FUSED in names:
                deps[name], deps[VARIANTS] = TrainMaskGenerator(), sr_model()
            elif name not in known:
                raise ValueError(f"TrainJudge generators: unknown {name!r} (known: "
                                 f"{', '.join(known)})")
        return deps

    def fingerprint(self) -> dict:
        """How the SR model's and the CFMG's versions are made, when they are generators."""
        deps = self.requires()
        facts = variant_settings() if {SR_GENERATOR, FUSED} & set(deps) else {}
        return {**facts, "fused_c": FuseGT().settings["c"]} if FUSED in deps else facts

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

    def _generators(self, draw: np.random.Generator) -> dict[str, Generator]:
        """The version generators of the `generators` that are inputs, by name: the enhancers,
        the SR model at a scale drawn from `draw` per crop, and the CFMG's fusion at FuseGT's c."""
        from pipeline.train import judge as JT
        from pipeline.train.cfmg import fused_generator

        inputs, device = self.input_stages(), self.device
        found = {name: JT.network_generator(stage.load_generator(device), device)
                 for name, stage in inputs.items() if name in ENHANCER_CANDIDATES}
        if SR_GENERATOR in inputs:
            variant = crop_variant(inputs[SR_GENERATOR].load_model(device), device)
            found[SR_GENERATOR] = JT.sr_generator(variant, SR_SCALES, draw)
        if FUSED in inputs:
            cfmg = inputs[FUSED]
            found[FUSED] = fused_generator(
                load_cfmg(cfmg.out_dir / CFMG_FILE, device),
                crop_variant(inputs[VARIANTS].load_model(device), device), SR_SCALES,
                FuseGT().settings["c"], cfmg.settings["crop"], device)
        return found

    def build(self, out: Path) -> dict:
        from pipeline.quality.judge import VersionRanges
        from pipeline.train import judge as JT
        from pipeline.train.loop import cpu_state, save_checkpoint

        s = self.settings
        images = [read_rgb(image_path(dirs["hr"], img.id))
                  for img, dirs in self.training_photos("hr")]
        ranges, shrink = VersionRanges(**s["versions"]), tuple(s["shrink"])
        draw, edge = rng(self.key, "pool"), JT.border(s["crop"])
        bases = JT.crop_bases(images, s["bases"], s["crop"] + 2 * edge, shrink, draw)
        # the generators load after the bases are cut, as ever: the weights stay bit for bit
        generators = self._generators(draw)
        pool = JT.build_pool(bases, ranges, list(generators.values()), edge, draw)
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
