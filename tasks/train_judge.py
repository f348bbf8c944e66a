"""TrainJudge: the pairwise quality judge that labels candidates and guides the CFMG
(pipeline.quality.judge, docs/ANNOTATION.md), learned from the corpus and the build's own models."""

from __future__ import annotations

import json
from pathlib import Path

import luigi
import numpy as np
import torch

from models.judge import PairJudge
from pipeline.quality import judge as J
from pipeline.store import durable
from pipeline.store.imageio import image_path, read_rgb
from pipeline.store.seeding import rng
from pipeline.train.cfmg import warmup_cosine
from pipeline.train.device import resolve_device
from pipeline.train.loop import (
    TrainState,
    finish_training,
    load_checkpoint,
    save_checkpoint,
    train_loop,
)
from pipeline.train.sr import super_resolve
from tasks.base import Stage
from tasks.candidates import ENHANCER_CANDIDATES, FUSED
from tasks.config import gtforge
from tasks.ingest import IngestHR
from tasks.super_resolve import SR_SCALES, SuperResolveGT
from tasks.train_enhancer import TrainEnhancer
from tasks.train_sr import sr_model_stage

MODEL_FILE = "judge.pt"
SR_GENERATOR = "sr"
CALIBRATION_JSON = "calibration.json"


class TrainJudge(Stage):
    """Train models.judge.PairJudge on pairs of versions of cleaner corpus crops (the pool:
    blur, noise, JPEG, sharpening, smoothing and rescaling within `versions`, and the
    `generators` — the build's enhancers and SR model — applied to degraded crops), then
    calibrate each head's margin on held-out pairs. Writes judge.pt ({'state', 'width'}),
    calibration.json (margins in dB per head, held-out accuracy), curve.csv and curve.png."""

    version = 1
    resumable = True
    heavy = True
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
    fresh_share = luigi.OptionalFloatParameter(default=None)  # of a batch: new classical pairs
    holdout = luigi.OptionalFloatParameter(default=None)  # share of bases kept for calibration
    precision = luigi.OptionalFloatParameter(default=None)  # of a vote, on held-out pairs
    ckpt_every = luigi.OptionalIntParameter(default=None, significant=False)

    def requires(self):
        """IngestHR, and the models of the `generators` that are configured candidates (an
        enhancer name, or "sr" for the SR model of the fused candidate's variants)."""
        names, deps = gtforge().candidate_names(), {"hr": IngestHR()}
        for name in self.settings["generators"]:
            if name in ENHANCER_CANDIDATES and name in names:
                backbone, degradation = name.split("_")
                deps[name] = TrainEnhancer(backbone=backbone, degradation=degradation)
            elif name == SR_GENERATOR and FUSED in names:
                deps[name] = sr_model_stage(SuperResolveGT(scale=SR_SCALES[0]).checkpoint)
            elif name not in (*ENHANCER_CANDIDATES, SR_GENERATOR):
                raise ValueError(f"TrainJudge generators: unknown {name!r} (known: "
                                 f"{', '.join((*ENHANCER_CANDIDATES, SR_GENERATOR))})")
        return deps

    def load_model(self, device: torch.device | str = "cpu") -> PairJudge:
        """The trained judge, in eval mode on `device`."""
        payload = load_checkpoint(self.out_dir / MODEL_FILE, "cpu")
        model = PairJudge(width=int(payload["width"]), heads=len(J.HEADS))
        model.load_state_dict(payload["state"])
        return model.to(device).eval()

    def margins(self) -> dict[str, float]:
        """Calibrated vote margin of every head, in dB: {"psnr": ..., "ssim": ..., ...}."""
        return json.loads((self.out_dir / CALIBRATION_JSON).read_text())["margins"]

    def _generators(self, device: torch.device, draw: np.random.Generator) -> list:
        inputs = self.input_stages()
        found = [J.network_generator(stage.load_generator(device), device)
                 for name, stage in inputs.items() if name in ENHANCER_CANDIDATES]
        if SR_GENERATOR in inputs:
            model = inputs[SR_GENERATOR].load_model(device)
            keep_low = SuperResolveGT(scale=SR_SCALES[0]).settings["keep_low"]
            found.append(J.sr_generator(
                lambda x, s: super_resolve(model, x, s, tile=4096, overlap=0, device=device,
                                           keep_low=keep_low), SR_SCALES, draw))
        return found

    def _pool(self, images: list[np.ndarray], ranges: J.VersionRanges,
              device: torch.device) -> J.Pool:
        s = self.settings
        draw = rng(self.key, "pool")
        border = s["crop"] // 8  # versions are made larger; their borders are left out
        bases = J.crop_bases(images, s["bases"], s["crop"] + 2 * border, tuple(s["shrink"]),
                             draw)
        return J.build_pool(bases, ranges, self._generators(device, draw), border, draw)

    def build(self, out: Path) -> dict:
        s = self.settings
        device = resolve_device(gtforge().device)
        hr = self.input_dir("hr")
        images = [read_rgb(image_path(hr, img.id)) for img in self.input_stages()["hr"].images()]
        ranges = J.VersionRanges(**s["versions"])
        pool = self._pool(images, ranges, device)
        held = max(1, int(round(s["holdout"] * len(pool.bases))))
        train_rows, held_rows = np.arange(held, len(pool.bases)), np.arange(held)
        torch.manual_seed(self.seed_for("init"))
        model = PairJudge(width=s["width"], heads=len(J.HEADS)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=1e-4)
        sched = warmup_cosine(opt, s["iterations"] // 10, s["iterations"])

        fresh = int(round(s["fresh_share"] * s["batch_size"]))

        def step(i: int) -> dict[str, float]:
            draw = rng(self.key, "batch", i)
            parts = [pool.pairs(draw, s["batch_size"] - fresh, train_rows)]
            if fresh:
                parts.append(J.fresh_pairs(images, fresh, s["crop"], s["crop"] // 8,
                                           tuple(s["shrink"]), ranges, draw))
            a, b, gain = (np.concatenate(x) for x in zip(*parts, strict=True))
            loss = J.judge_step(model, opt, a, b, gain, device)
            sched.step()
            return {"bce": loss}

        state = TrainState.of(model=model, opt=opt, sched=sched)
        train_loop(step, state, s["iterations"], out / "checkpoints",
                   self.setting("ckpt_every"), self.seed_for("steps"), desc="TrainJudge",
                   report=self.report, device=device)
        calibration = self._calibrate(model, pool, held_rows, device)
        save_checkpoint(out / MODEL_FILE, {"state": {k: v.cpu() for k, v in
                                                      model.state_dict().items()},
                                            "width": s["width"]})
        durable.write_json(out / CALIBRATION_JSON, calibration)
        finish_training(out, "TrainJudge")
        return {"pool": {"bases": len(pool.bases), "versions": pool.versions.shape[1]},
                **calibration}

    def _calibrate(self, model: PairJudge, pool: J.Pool, rows: np.ndarray,
                   device: torch.device) -> dict:
        """Margins from held-out pairs, and how often the judge orders them right."""
        a, b, gain = pool.pairs(rng(self.key, "calibration"), 40 * len(rows), rows)
        predicted = J.judge(model, a, b[:, None], device)[:, 0]
        margins = J.calibrate(predicted, gain, self.settings["precision"])
        clear = np.abs(gain) > 0.25
        order = ((predicted > 0) == (gain > 0)) | ~clear
        return {"margins": dict(zip(J.HEADS, margins.round(4).tolist(), strict=True)),
                "heldout_pairs": len(a),
                "heldout_order_accuracy": dict(zip(J.HEADS, (order.sum(0) / len(a)).round(4)
                                                   .tolist(), strict=True))}
