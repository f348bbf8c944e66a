"""Judge variants on the quality benchmark's build: how a TrainJudge with some settings changed
labels the build's candidates, against the oracle of the clean references.

    .venv/bin/python -m bench.bench_judge --dir data/quality [--set iterations=4800 ...]
        [--annotator judge|neighbours]

Needs a finished `make quality` (or `bench.bench_quality --no-evaluate`) in --dir. Trains the
judge with the --set values (JSON; the rest from luigi.cfg, as the build does: everything
upstream is cached), relabels every candidate of every shard sample with one of its two
annotators (the judge, default, or the neighbours annotator, pipeline.quality.neighbours), its
own calibrated margins (per candidate, or with --pooled those of every generator together) and
HGGT's majority, and prints the confusion matrix against the oracle
overall and per candidate, with the correlation of the PSNR head with the true PSNR
gain. The candidates are the build's own, so `fused` is the one its own judge shaped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import luigi
import numpy as np

from bench.bench_quality import configure
from pipeline.quality import annotate, truth, voting
from pipeline.quality import judge as J
from pipeline.quality import neighbours as NB
from pipeline.shards.reader import ShardSet
from tasks.train_judge import CALIBRATION_JSON, TrainJudge
from tasks.write_manifest import WriteManifest
from tasks.write_shards import DATASET


def built_shards(root: Path) -> Path:
    """The benchmark build's shard set: the newest finished one under its WriteManifest folder
    (a judge with other settings has another key, so WriteManifest() would name another)."""
    found = sorted((root / "work" / WriteManifest.__name__).glob(f"*/{DATASET}/manifest.json"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"{root}: no finished shard set; run bench.bench_quality there first")
    return found[-1].parent


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB of uint8 x against ref, as the oracle measures it."""
    return float(J.closeness(x, ref)[0])


def relabel(stage: TrainJudge, shards: ShardSet, references: dict, pooled: bool = False,
            annotator: str = voting.JUDGE) -> tuple[dict, dict]:
    """({candidate: labels}, {candidate: (judged PSNR-head gain, true PSNR gain)}) over every
    referenced shard sample, labels from `stage`'s `annotator` and its calibrated margins for
    each candidate (with `pooled`, the judge's of every generator's pairs together, for all).
    The neighbours do not judge a candidate no generator made (`fused`): Similar."""
    names = shards.candidate_names
    asked = [None] * len(names) if pooled else names
    if annotator == voting.NEIGHBOURS:
        table, own = stage.gain_table(), stage.neighbour_margins(names)
        above, below = ([[own[c][sign][h] if own[c] else np.nan for h in J.HEADS]
                         for c in names] for sign in ("positive", "negative"))
        judged = lambda o, c: NB.judged(table, names, o, c)  # noqa: E731
    else:
        model, own = stage.load_model(), stage.candidate_margins([None, *names])
        above = below = [[own[c][h] for h in J.HEADS] for c in asked]
        judged = lambda o, c: J.judge(model, o, c)  # noqa: E731
    labels = {n: [] for n in names}
    pairs = {n: ([], []) for n in names}
    for shard, n, clean in truth.referenced_samples(shards, references):
        original = shard.image("gt_original", n)
        candidates = np.stack([shard.image("gt_candidates", n, k) for k in range(len(names))])
        gains = judged(original[None], candidates[None])  # (1, K, 3): dB, or net shares
        votes = voting.vote(annotate.pairwise_scores(gains), above, [False] * 3, [False] * 3,
                            negative_margins=below)
        before = psnr(original, clean)
        for k, (name, label) in enumerate(zip(names, voting.majority(votes[0]), strict=True)):
            labels[name].append(int(label))
            pairs[name][0].append(float(gains[0, k, 0]))
            pairs[name][1].append(psnr(candidates[k], clean) - before)
    return labels, pairs


def report(labels: dict, pairs: dict) -> None:
    print("| candidate | confusion (rows oracle N/S/P) | P precision | P recall | N recall | "
          "corr(judged, true) |\n|---|---|---|---|---|---|")
    total = np.zeros((3, 3), np.int64)
    for name in labels:
        judged, gain = (np.array(v) for v in pairs[name])
        m = truth.confusion(np.array(labels[name]), truth.oracle(gain))
        total += m
        r = truth.rates(m)
        print(f"| {name} | {m.tolist()} | {r['positive_precision']} | {r['positive_recall']} | "
              f"{r['negative_recall']} | {np.corrcoef(judged, gain)[0, 1]:+.2f} |")
    r = truth.rates(total)
    print(f"| all | {total.tolist()} | {r['positive_precision']} | {r['positive_recall']} | "
          f"{r['negative_recall']} | |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=Path("data/quality"))
    p.add_argument("--set", action="append", default=[], metavar="NAME=JSON",
                   help="a TrainJudge setting, e.g. iterations=4800 or shrink=[0.25,0.5]")
    p.add_argument("--pooled", action="store_true",
                   help="vote with the margins of every generator's pairs together, as before "
                        "per-candidate margins")
    p.add_argument("--annotator", choices=voting.LEARNED, default=voting.JUDGE,
                   help="which of TrainJudge's annotators relabels")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every-crop", action="store_true",
                   help="the build was made with bench_quality --every-crop")
    args = p.parse_args()
    args.no_evaluate, args.folds, args.heldout_lr, args.loss = True, None, None, None
    configure(args.dir, args)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    stage = TrainJudge(**overrides)
    start = time.time()
    if not luigi.build([stage], local_scheduler=True, workers=1):
        raise SystemExit(f"{stage} failed")
    calibration = json.loads((stage.out_dir / CALIBRATION_JSON).read_text())
    print(f"TrainJudge {overrides or 'as configured'}: {time.time() - start:.0f} s; margins "
          f"{calibration['margins']}; held-out order accuracy "
          f"{calibration['heldout_order_accuracy']}\n")
    shards = ShardSet(built_shards(args.dir))
    report(*relabel(stage, shards, truth.reference_index(args.dir / "clean"), args.pooled,
                    args.annotator))


if __name__ == "__main__":
    main()
