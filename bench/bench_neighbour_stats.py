"""A sixth statistic for the neighbours annotator, tried on a quality benchmark build: the
enhancers' labels with the five statistics and with one more, against the oracle.

    .venv/bin/python -m bench.bench_neighbour_stats --dir D [--extra flat-noise|scale-ratio]

Needs a finished `bench.bench_quality --no-evaluate` in D. Reads the build's JudgePool (bases,
inputs, the four enhancers' outputs), measures each pair's true gains as TrainJudge does
(pipeline.quality.judge.closeness, without the border), fits a neighbours table
(pipeline.quality.neighbours.fit, k = 25) on the training rows and calibrates its margins on
the held-out ones (TrainJudge's holdout and precision), then labels every enhancer candidate of
the build's shard samples (three heads, HGGT's majority) and prints the confusion matrix
against the oracle, overall and per candidate. `fused` is left out: its pool column is made in
TrainJudge and not kept. The extra statistics, of the original's luma:

- flat-noise: log(0.1 + Immerkaer's sigma over the flattest 10 % of 8 x 8 blocks);
- scale-ratio: log of Immerkaer's sigma at full scale over that of the area-halved image
  (about log 2 for white noise, below 0 for fine texture).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from bench.bench_judge import built_shards
from pipeline.image.patches import luma
from pipeline.quality import neighbours as NB
from pipeline.quality import truth
from pipeline.quality.judge import HEADS, closeness
from pipeline.quality.lr_stats import IMMERKAER_SCALE, immerkaer_response
from pipeline.quality.voting import majority
from pipeline.shards.reader import ShardSet
from pipeline.train.judge import border, held_out_rows

ENHANCERS = ("rcan_noise", "rcan_blur", "elan_noise", "elan_blur")


def flat_noise(rgb: np.ndarray, block: int = 8, share: float = 10) -> float:
    r = immerkaer_response(luma(rgb))
    h, w = r.shape[0] // block * block, r.shape[1] // block * block
    means = r[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))
    return float(np.log(0.1 + IMMERKAER_SCALE * np.percentile(means, share)))


def scale_ratio(rgb: np.ndarray) -> float:
    y = luma(rgb)
    half = cv2.resize(y, (y.shape[1] // 2, y.shape[0] // 2), interpolation=cv2.INTER_AREA)
    fine, coarse = (IMMERKAER_SCALE * immerkaer_response(x).mean() for x in (y, half))
    return float(np.log((fine + 0.1) / (coarse + 0.1)))


EXTRA: dict[str, Callable[[np.ndarray], float] | None] = {
    "none": None, "flat-noise": flat_noise, "scale-ratio": scale_ratio}


def pair_stats(a: np.ndarray, b: np.ndarray, extra: Callable | None) -> np.ndarray:
    """The five statistics of (a, b), and `extra(a)` when given."""
    s = NB.statistics(a, b)
    return s if extra is None else np.append(s, extra(a))


def labels_with(pool: dict[str, np.ndarray], gains: dict[str, np.ndarray],
                samples: list[tuple], extra: Callable | None, holdout: float,
                precision: float) -> dict[str, np.ndarray]:
    """{enhancer: confusion matrix of its labels on `samples` against the oracle}."""
    held, train = held_out_rows(len(pool["inputs"]), holdout)[::-1]
    stats = {g: np.array([pair_stats(a, b, extra) for a, b in zip(pool["inputs"], pool[g],
                                                                  strict=True)])
             for g in ENHANCERS}
    table = NB.fit({g: (stats[g][train], gains[g][train]) for g in ENHANCERS}, 25)
    found = {}
    for g in ENHANCERS:
        m = NB.margins(table.predict(g, stats[g][held]), gains[g][held], precision)
        asked = np.array([pair_stats(o, c[g], extra) for o, c, _ in samples])
        share = table.predict(g, asked)
        share[[bool((c[g] == o).all()) for o, c, _ in samples]] = 0
        up = np.array([m["positive"][h] for h in HEADS])
        down = np.array([m["negative"][h] for h in HEADS])
        votes = np.where(share > up, 1, np.where(share < -down, -1, 0)).astype(np.int8)
        found[g] = truth.confusion(majority(votes), truth.oracle(
            np.array([gain[g] for _, _, gain in samples])))
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--extra", choices=[e for e in EXTRA if e != "none"], default="flat-noise")
    p.add_argument("--holdout", type=float, default=0.2, help="TrainJudge's (tiny preset)")
    p.add_argument("--precision", type=float, default=0.9, help="TrainJudge's")
    args = p.parse_args()
    folder = next((args.dir / "work" / "JudgePool").glob("*/"))
    edge = border(json.loads((folder / "manifest.json").read_text())["params"]["crop"])
    inner = np.s_[:, edge:-edge, edge:-edge]
    pool = {n: np.load(folder / f"{n}.npy")[inner] for n in ("bases", "inputs", *ENHANCERS)}
    before = np.array([closeness(x, b) for x, b in zip(pool["inputs"], pool["bases"],
                                                       strict=True)])
    gains = {g: np.array([closeness(x, b) for x, b in zip(pool[g], pool["bases"], strict=True)])
             - before for g in ENHANCERS}
    shards, refs = ShardSet(built_shards(args.dir)), truth.reference_index(args.dir / "clean")
    names = shards.candidate_names
    samples = []
    for shard, n, ref in truth.referenced_samples(shards, refs):
        o = shard.image("gt_original", n)
        c = {g: shard.image("gt_candidates", n, names.index(g)) for g in ENHANCERS}
        samples.append((o, c, {g: truth.distances(c[g], ref)["psnr"]
                               - truth.distances(o, ref)["psnr"] for g in ENHANCERS}))
    for extra in ("none", args.extra):
        found = labels_with(pool, gains, samples, EXTRA[extra], args.holdout, args.precision)
        total = sum(found.values())
        print(f"\n{extra}: every enhancer {truth.rates(total)}, confusion {total.tolist()}")
        for g, m in found.items():
            print(f"  {g}: {truth.rates(m)}")


if __name__ == "__main__":
    main()
