"""Training gtforge's pairwise judge (pipeline.quality.judge says what it judges): the pool of
versions of corpus bases and their closeness, batches of pairs from it and from fresh bases,
the vote margins' calibration on held-out pairs, the soft-label loss and step, the build's own
networks as version generators, and JudgeTraining (PairJudge, AdamW, warm-up + cosine).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.judge import PairJudge
from pipeline.image.conversions import to_images, to_tensor
from pipeline.quality import neighbours
from pipeline.quality.judge import (
    HEADS,
    TEMPERATURE,
    VersionRanges,
    calibrate,
    closeness,
    degraded,
    judge,
    processed,
)
from pipeline.train.loop import Training, descend
from pipeline.train.precision import FP32, Precision
from pipeline.train.schedules import warmup_cosine

# A version generator: uint8 (N,H,W,3) -> uint8 (N,H,W,3) (an enhancer).
Generator = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------- the pool and its pairs

@dataclass
class Pool:
    """Bases (N,S,S,3) and versions (N,V,S,S,3) of each, uint8; closeness (N,V,3) of every
    version to its base. Version 0 is the judged input; versions 1..`generated` are the
    generators' outputs for it, and the rest one processing step of it. A pair is always
    the input and a version made from it: the question a label asks (is this processing of the
    image closer to the clean one than the image?)."""

    bases: np.ndarray
    versions: np.ndarray
    closeness: np.ndarray
    generated: int = 0

    def pairs(self, rng: np.random.Generator, count: int,
              rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`count` random pairs (input, a version made from it) of bases in `rows` (default
        all): uint8 (count,S,S,3) each, and gain = closeness(b) - closeness(a), (count,3) dB."""
        rows = np.arange(len(self.bases)) if rows is None else rows
        n = rows[rng.integers(len(rows), size=count)]
        return self._pairs(n, rng.integers(1, self.versions.shape[1], size=count))

    def every_pair(self, rows: np.ndarray, generated: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair (input, a version made from it) of the bases in `rows`, as `pairs`
        returns them, each row's versions in turn; with `generated`, only those of a
        generator's output (what a label is asked of an enhancer's candidate)."""
        if generated and not self.generated:
            raise ValueError("the pool has no generator outputs")
        n, j = self.every_index(rows)
        keep = self.from_generator(j) if generated else slice(None)
        return self._pairs(n[keep], j[keep])

    def from_generator(self, j: np.ndarray) -> np.ndarray:
        """bool: which version columns `j` hold a generator's output."""
        return (j >= 1) & (j <= self.generated)

    def every_index(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(base rows, version columns) of `every_pair(rows)`, in its order."""
        v = self.versions.shape[1]
        return np.repeat(rows, v - 1), np.tile(np.arange(1, v), len(rows))

    def _pairs(self, n: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        gain = self.closeness[n, j] - self.closeness[n, 0]
        return self.versions[n, 0], self.versions[n, j], gain


def crop_bases(images: Sequence[np.ndarray], count: int, side: int, shrink: tuple[float, float],
               rng: np.random.Generator) -> np.ndarray:
    """`count` random bases: a crop of side/f pixels of a random image, f ~ U[shrink], area-
    downscaled to side x side (f < 1: cleaner than the image), flipped with probability 1/2.
    uint8 (count, side, side, 3)."""
    out = np.empty((count, side, side, 3), np.uint8)
    for k in range(count):
        img = images[rng.integers(len(images))]
        big = min(int(round(side / rng.uniform(*shrink))), *img.shape[:2])
        y, x = rng.integers(img.shape[0] - big + 1), rng.integers(img.shape[1] - big + 1)
        crop = cv2.resize(img[y:y + big, x:x + big], (side, side), interpolation=cv2.INTER_AREA)
        out[k] = crop[:, ::-1] if rng.uniform() < 0.5 else crop
    return out


def judged_input(base: np.ndarray, ranges: VersionRanges, rng: np.random.Generator) -> np.ndarray:
    """What the judge is shown as an original: the base `degraded` 70% of the time, else the
    base itself (where every change is for the worse)."""
    return degraded(base, ranges, rng) if rng.uniform() < 0.7 else base


def pool_inputs(bases: np.ndarray, ranges: VersionRanges, rng: np.random.Generator) -> np.ndarray:
    """The judged input of every base (`judged_input`): uint8, the bases' shape."""
    return np.stack([judged_input(b, ranges, rng) for b in bases])


def build_pool(bases: np.ndarray, inputs: np.ndarray, outputs: Sequence[np.ndarray],
               ranges: VersionRanges, border: int, rng: np.random.Generator) -> Pool:
    """The pool of `bases` and their `inputs` (`pool_inputs`): each input's versions are the
    generators' `outputs` for it (each uint8 like `inputs`), then two `processed` steps of it.
    Everything is kept and compared without a `border` of pixels on each side (where filters
    see the edge)."""
    columns = [inputs, *outputs]
    columns += [np.stack([processed(x, ranges, rng) for x in inputs]) for _ in range(2)]
    inner = slice(border, bases.shape[1] - border)
    versions = np.stack(columns, axis=1)[:, :, inner, inner]
    bases = bases[:, inner, inner]
    near = np.array([[closeness(v, b) for v in vs] for vs, b in zip(versions, bases, strict=True)])
    return Pool(np.ascontiguousarray(bases), np.ascontiguousarray(versions), near, len(outputs))


def fresh_pairs(images: Sequence[np.ndarray], count: int, side: int, border: int,
                shrink: tuple[float, float], ranges: VersionRanges,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` new pairs (as Pool.pairs returns them) of new bases, made without a generator:
    an input and one `processed` step of it; unlimited data."""
    bases = crop_bases(images, count, side + 2 * border, shrink, rng)
    inputs = [judged_input(x, ranges, rng) for x in bases]
    inner = np.s_[border:border + side, border:border + side]
    a, b = [x[inner] for x in inputs], [processed(x, ranges, rng)[inner] for x in inputs]
    gain = np.array([closeness(y, x[inner]) - closeness(w, x[inner])
                     for w, y, x in zip(a, b, bases, strict=True)])
    return np.stack(a), np.stack(b), gain


def border(side: int) -> int:
    """How many pixels a version of a `side`-pixel crop is made larger by on each side, then
    left out (where filters see the edge)."""
    return side // 8


def held_out_rows(count: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of a pool of `count` bases: the first `share` of them
    (at least one) are held out for calibration."""
    held = max(1, int(round(share * count)))
    return np.arange(held, count), np.arange(held)


def batch_pairs(rng: np.random.Generator, pool: Pool, rows: np.ndarray, count: int, fresh: int,
                images: Sequence[np.ndarray], side: int, shrink: tuple[float, float],
                ranges: VersionRanges) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A training batch of `count` pairs (as Pool.pairs returns them): count - fresh from the
    pool's `rows`, then `fresh` new pairs of `side` pixels (`fresh_pairs`)."""
    parts = [pool.pairs(rng, count - fresh, rows)]
    if fresh:
        parts.append(fresh_pairs(images, fresh, side, border(side), shrink, ranges, rng))
    a, b, gain = (np.concatenate(x) for x in zip(*parts, strict=True))
    return a, b, gain


def calibration(model: PairJudge, pool: Pool, rows: np.ndarray, precision: float,
                device: torch.device | str = "cpu", names: Sequence[str] = ()) -> dict:
    """The judge's vote margins (dB per head, pipeline.quality.judge.calibrate at `precision`)
    from every pair of a held-out input (`rows`) and a generator's output for it, what a label
    is asked of (every held-out pair when the pool has no generators); with the generators'
    `names` (in the pool's order), each generator's own margins from its pairs alone
    (`candidate_margins`); and the share of every held-out pair with a clear gain (> 0.25 dB)
    it orders right. JSON-ready."""
    if names and len(names) != pool.generated:
        raise ValueError(f"{len(names)} generator names for a pool of {pool.generated}")
    a, b, gain = pool.every_pair(rows)
    predicted = judge(model, a, b[:, None], device)[:, 0]
    order = ((predicted > 0) == (gain > 0)) | (np.abs(gain) <= 0.25)
    column = pool.every_index(rows)[1]
    chosen = pool.from_generator(column) if pool.generated else slice(None)
    heads = lambda v: dict(zip(HEADS, np.round(v, 4).tolist(), strict=True))  # noqa: E731
    margins = lambda keep: heads(calibrate(predicted[keep], gain[keep], precision))  # noqa: E731
    return {"margins": margins(chosen),
            "candidate_margins": {name: margins(column == g + 1) for g, name in enumerate(names)},
            "calibrated_on": {"pairs": len(gain[chosen]),
                              "kind": "generated" if pool.generated else "all"},
            "heldout_pairs": len(order), "heldout_order_accuracy": heads(order.mean(0))}


def neighbour_table(pool: Pool, train_rows: np.ndarray, held_rows: np.ndarray,
                    names: Sequence[str], k: int, precision: float
                    ) -> tuple[neighbours.GainTable, dict]:
    """The neighbours annotator (pipeline.quality.neighbours) fitted on the pool's training
    inputs and each generator's outputs for them (`names`, in the pool's order), and its
    margins per sign calibrated on the held-out inputs: (table, {generator: {"positive":
    {head: net share}, "negative": {...}}})."""
    if len(names) != pool.generated:
        raise ValueError(f"{len(names)} generator names for a pool of {pool.generated}")

    def rows(idx: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
        return neighbours.pair_rows(pool.versions[idx, 0], pool.versions[idx, g + 1],
                                    pool.closeness[idx, g + 1] - pool.closeness[idx, 0])

    table = neighbours.fit({name: rows(train_rows, g) for g, name in enumerate(names)}, k)
    margins = {}
    for g, name in enumerate(names):
        stats, gain = rows(held_rows, g)
        margins[name] = neighbours.margins(table.predict(name, stats), gain, precision)
    return table, margins


# ---------------------------------------------------------------- the loss and the training

def judge_loss(model: PairJudge, a: torch.Tensor, b: torch.Tensor,
               gain: torch.Tensor, precision: Precision = FP32) -> torch.Tensor:
    """Binary cross-entropy of the judge's outputs (logits, the forward pass at `precision`)
    against soft labels sigmoid(gain / TEMPERATURE): which of the two is closer, sure when the
    gain is large."""
    logits = precision.forward(model, a, b)
    return F.binary_cross_entropy_with_logits(logits, torch.sigmoid(gain / TEMPERATURE))


def judge_step(model: PairJudge, optimizer: torch.optim.Optimizer, a: np.ndarray,
               b: np.ndarray, gain: np.ndarray, device: torch.device | str = "cpu",
               precision: Precision = FP32) -> float:
    """One optimiser step on a batch of pairs (uint8 NHWC, gains (N,3) dB), the forward pass at
    `precision`; returns the loss."""
    model.train()
    loss = judge_loss(model, to_tensor(a, device), to_tensor(b, device),
                      torch.as_tensor(gain, dtype=torch.float32, device=device), precision)
    descend(optimizer, loss)
    return float(loss.detach())


class JudgeTraining(Training):
    """A PairJudge, its AdamW (weight decay 1e-4) and a warm-up (the first tenth of `total`
    steps) + cosine schedule: `step(i, a, b, gain)` is one `judge_step` on `device`."""

    def __init__(self, model: PairJudge, lr: float, total: int,
                 device: torch.device | str = "cpu"):
        self.model, self.device = model, device
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        self.sched = warmup_cosine(self.opt, total // 10, total)

    def parts(self) -> dict[str, Any]:
        return {"model": self.model, "opt": self.opt, "sched": self.sched}

    def step(self, i: int, a: np.ndarray, b: np.ndarray, gain: np.ndarray) -> dict[str, float]:
        """Update i on a batch of pairs (uint8 NHWC each, gains (N,3) dB); returns {"bce": loss}."""
        loss = judge_step(self.model, self.opt, a, b, gain, self.device, self.precision)
        self.sched.step()
        return {"bce": loss}


def build_training(width: int, lr: float, total: int, seed: int,
                   device: torch.device | str = "cpu",
                   precision: Precision = FP32) -> JudgeTraining:
    """The training of a PairJudge of `width` with a head per HEADS, initialised from `seed`
    (same weights on every clean build), on `device`, for `total` steps, forward passes at
    `precision`."""
    torch.manual_seed(seed)
    model = precision.prepare(PairJudge(width=width, heads=len(HEADS)).to(device))
    training = JudgeTraining(model, lr, total, device)
    training.precision = precision
    return training


# ---------------------------------------------------------------- generators from models

def network_generator(model: torch.nn.Module, device: torch.device | str = "cpu",
                      batch: int = 64) -> Generator:
    """A 1x network (an enhancer) as a version generator, `batch` crops at a time."""

    @torch.no_grad()
    def generate(images: np.ndarray) -> np.ndarray:
        return np.concatenate([to_images(model(to_tensor(images[s:s + batch], device)))
                               for s in range(0, len(images), batch)])

    return generate


def sr_versions(variants: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The SR model as a version generator, from every crop's variants (N,K,h,w,3), made
    beforehand at K scales: each crop's variant at a scale drawn from `rng`. uint8 (N,h,w,3)."""
    return variants[np.arange(len(variants)), rng.integers(variants.shape[1], size=len(variants))]
