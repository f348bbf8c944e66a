"""JudgePool: the part of TrainJudge's pool that the CFMG is not needed for (the corpus bases,
the judged input of each, every enhancer's output for it and its SR variants), made while
TrainMaskGenerator trains, so that TrainJudge waits for the CFMG only to fuse."""

from __future__ import annotations

from pathlib import Path

import luigi
import numpy as np

from pipeline.store import durable
from pipeline.store.imageio import image_path, read_rgb
from pipeline.store.seeding import rng
from tasks.config import ENHANCER_CANDIDATES, FUSED, gtforge
from tasks.ingest import IngestHR
from tasks.super_resolve import SR_SCALES, crop_variant, sr_model, variant_settings
from tasks.train_enhancer import TrainEnhancer
from tasks.training import TrainingStage, training_inputs

SR_GENERATOR = "sr"
BASES, INPUTS, VARIANTS = "bases", "inputs", "variants"
GENERATORS = (*ENHANCER_CANDIDATES, SR_GENERATOR, FUSED)


def active_generators(names: list[str]) -> list[str]:
    """The `names` (TrainJudge's generators, in order) whose candidate is configured: an
    enhancer that is a candidate; "sr" and "fused" when fused is. ValueError for an unknown
    name."""
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        raise ValueError(f"TrainJudge generators: unknown {unknown[0]!r} (known: "
                         f"{', '.join(GENERATORS)})")
    candidates = gtforge().candidate_names()
    return [n for n in names if n in candidates or (n == SR_GENERATOR and FUSED in candidates)]


class JudgePool(TrainingStage):
    """`bases` corpus crops of `crop` pixels plus a border on each side (pipeline.train.judge:
    crop_bases, pool_inputs), the judged input of each, and what the `generators` make of the
    inputs without the CFMG: each enhancer's output, and the SR variants at SR_SCALES when
    "sr" or "fused" is one. Writes bases.npy, inputs.npy (uint8 (N,S,S,3)), <enhancer>.npy
    (the same shape) and variants.npy (uint8 (N,K,S,S,3)). TrainJudge sets every parameter.
    A training stage for its photos and device: it trains nothing."""

    version = 1
    bases = luigi.IntParameter()
    crop = luigi.IntParameter()  # judged side, pixels; the border is pipeline.train.judge.border
    shrink = luigi.ListParameter()
    versions = luigi.DictParameter()  # pipeline.quality.judge.VersionRanges
    generators = luigi.ListParameter()  # active_generators of TrainJudge's

    def requires(self):
        """IngestHR, each enhancer generator's TrainEnhancer, and the SR model when the
        variants are needed."""
        deps = training_inputs(lambda chunk: {"hr": IngestHR(chunk=chunk)})
        for name in self.generators:
            if name in ENHANCER_CANDIDATES:
                backbone, degradation = name.split("_")
                deps[name] = TrainEnhancer(backbone=backbone, degradation=degradation)
        if self.needs_variants:
            deps[VARIANTS] = sr_model()
        return deps

    @property
    def needs_variants(self) -> bool:
        return bool({SR_GENERATOR, FUSED} & set(self.generators))

    def fingerprint(self) -> dict:
        """How the SR variants are made, when they are."""
        return variant_settings() if self.needs_variants else {}

    def column(self, name: str) -> np.ndarray:
        """One of the arrays written (BASES, INPUTS, an enhancer's name, VARIANTS),
        memory-mapped read-only."""
        return np.load(self.out_dir / f"{name}.npy", mmap_mode="r")

    def build(self, out: Path) -> dict:
        from pipeline.quality.judge import VersionRanges
        from pipeline.train import judge as JT

        s, device = self.settings, self.device
        images = [read_rgb(image_path(dirs["hr"], img.id))
                  for img, dirs in self.training_photos("hr")]
        draw, ranges = rng(self.key, "pool"), VersionRanges(**s["versions"])
        side = s["crop"] + 2 * JT.border(s["crop"])
        bases = JT.crop_bases(images, s["bases"], side, tuple(s["shrink"]), draw)
        inputs = JT.pool_inputs(bases, ranges, draw)
        _save(out, BASES, bases)
        _save(out, INPUTS, inputs)
        inputs_stages = self.input_stages()
        enhancers = [n for n in s["generators"] if n in ENHANCER_CANDIDATES]
        for name in self.progress(enhancers, len(enhancers), "JudgePool: enhancers"):
            if not (out / f"{name}.npy").exists():  # a resumed run keeps what it made
                model = inputs_stages[name].load_generator(device)
                _save(out, name, JT.network_generator(model, device)(inputs))
        if self.needs_variants and not (out / f"{VARIANTS}.npy").exists():
            variant = crop_variant(inputs_stages[VARIANTS].load_model(device), device)
            _save(out, VARIANTS, np.stack([
                [variant(x, scale) for scale in SR_SCALES]
                for x in self.progress(inputs, len(inputs), "JudgePool: SR variants")]))
        return {"bases": len(bases), "side": side}


def _save(out: Path, name: str, array: np.ndarray) -> None:
    """out/<name>.npy, written under another name and renamed: a killed run leaves no
    half-written column that a resumed one would keep."""
    part = out / f"{name}.part.npy"
    np.save(part, array)
    durable.fsync_file(part)
    durable.rename(part, out / f"{name}.npy")
