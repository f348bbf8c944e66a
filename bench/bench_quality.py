"""The quality benchmark: a build judged against a truth it never sees.

    .venv/bin/python -m bench.bench_quality [--dir data/quality] [--preset tiny] [--workers 2]
                                            [--threads 1] [--no-evaluate] [--seed 0]

1. Makes the benchmark set once (pipeline.sample.make_quality_corpus): the sample photographs
   as clean references, and an imperfect GT of each, blur-led and noise-led in turn.
2. Builds the dataset from the imperfect GTs only ([gtforge] references points the report at
   the clean ones; evaluate = true also runs EvaluateTargets).
3. Prints markdown tables: per candidate, the distance to the clean reference against the
   original GT's (PSNR, SSIM, edge PSNR), overall and per kind of imperfection; the labels'
   confusion matrix against the oracle; `fused` at c = 0, the configured c and 1 (mean
   |fused − GT|, high-frequency energy against the GT's, PSNR gain towards the clean photo);
   and the SR networks trained per target.
Results are also in the build's report (data/quality/out/report/index.html).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import luigi
import luigi.configuration
import numpy as np
import torch

import tasks  # noqa: F401  (registers the tasks, loads luigi.cfg)
from pipeline import truth
from pipeline.conversions import to_tensor
from pipeline.fusion import high_frequency_energy
from pipeline.imageio import image_path, read_rgb
from pipeline.ingest import read_images
from pipeline.sample import make_quality_corpus
from pipeline.shards import ShardSet
from tasks.evaluate import EVALUATION_JSON, TRUTH_JSON, EvaluateTargets, MeasureTruth, read_json
from tasks.fuse import FuseGT
from tasks.ingest import IngestHR
from tasks.publish import BuildDataset
from tasks.write_shards import DATASET, WriteShards


def configure(root: Path, args: argparse.Namespace) -> None:
    cfg = luigi.configuration.get_config()
    values = {"preset": args.preset, "input_dir": root / "imperfect", "workdir": root / "work",
              "out_dir": root / "out", "references": root / "clean", "threads": args.threads,
              "evaluate": str(not args.no_evaluate).lower(), "seed": args.seed}
    for key, value in values.items():
        cfg.set("gtforge", key, str(value))


def candidate_rows(found: dict[str, truth.CandidateTruth]) -> list[str]:
    rows = []
    for name, t in found.items():
        c = t.summary()
        g = c["gain"]
        rate = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
        rows.append(f"| {name} | {c['patches']} | {g['psnr']['mean']:+.2f} | "
                    f"{g['psnr']['closer']}/{c['patches']} | {g['ssim']['mean']:+.4f} | "
                    f"{g['edges']['mean']:+.2f} | {c['mad']:.2f} | "
                    f"{rate(c['positive_precision'])} | {rate(c['positive_recall'])} | "
                    f"{rate(c['negative_recall'])} |")
    return rows


def print_truth(shards: ShardSet, references: dict, kinds: dict[str, str]) -> None:
    header = ("| candidate | patches | ΔPSNR dB | closer | ΔSSIM | Δedge PSNR dB | "
              "mean abs diff | P precision | P recall | N recall |\n|---|---|---|---|---|---|---|"
              "---|---|---|")
    for kind in (None, "blur", "noise"):
        refs = {k: v for k, v in references.items()
                if kind is None or kinds.get(f"{k}.png") == kind}
        found = truth.measure_shards(shards, refs)
        print(f"\n{'All imperfect GTs' if kind is None else kind + '-led GTs'}:\n\n{header}")
        print("\n".join(candidate_rows(found)))
        if kind is None:
            o = truth.overall(found)
            print("\nLabels against the oracle (rows: oracle N/S/P; columns: labels N/S/P):")
            for name, row in zip(("oracle Negative", "oracle Similar", "oracle Positive"),
                                 o["confusion"], strict=True):
                print(f"| {name} | " + " | ".join(map(str, row)) + " |")
            print(json.dumps({k: v for k, v in o.items() if k != "confusion"}))


def fusion_row(fused_dir: Path, references: dict) -> str:
    """Means over the photos of |fused − GT| (grey levels), the fused image's high-frequency
    energy (above half Nyquist) over the GT's, and its PSNR gain (dB) towards the clean photo."""
    mad, hf, gain = [], [], []
    for img in read_images(IngestHR().out_dir):
        gt, fused = read_rgb(image_path(IngestHR().out_dir, img.id)), read_rgb(
            image_path(fused_dir, img.id))
        clean = read_rgb(truth.reference_for(img.source, references))
        mad.append(np.abs(fused.astype(np.float32) - gt).mean())
        energy = [high_frequency_energy(to_tensor(x)).mean().item() for x in (fused, gt)]
        hf.append(energy[0] / energy[1])
        gain.append(truth.distances(fused, clean)["psnr"] - truth.distances(gt, clean)["psnr"])
    return f"{np.mean(mad):.2f} | {np.mean(hf):.3f} | {np.mean(gain):+.2f}"


def print_fusion_by_c(references: dict, workers: int) -> None:
    stages = {c: FuseGT(c=c) for c in (0.0, FuseGT().settings["c"], 1.0)}
    luigi.build(list(stages.values()), local_scheduler=True, workers=workers)
    print("\nfused by c, whole photos (HF energy: above half Nyquist, over the GT's):\n\n"
          "| c | mean abs diff to GT | HF energy / GT's | ΔPSNR to clean dB |\n|---|---|---|---|")
    with torch.no_grad():
        for c, stage in stages.items():
            print(f"| {c} | {fusion_row(stage.out_dir, references)} |")


def print_evaluation(result: dict) -> None:
    print(f"\nSR networks per target ({result['training_samples']} training samples; held out: "
          f"{', '.join(result['heldout'])}):\n")
    print("| target | PSNR dB (mean ± std) | SSIM | ΔPSNR over original (min … max) | "
          "share of ceiling |\n|---|---|---|---|---|")
    for name, row in result["comparison"].items():
        p, s = row["psnr"], row["ssim"]
        g = p.get("gain_over_original")
        gain = "–" if g is None else f"{g['mean']:+.3f} ({g['min']:+.3f} … {g['max']:+.3f})"
        print(f"| {name} | {p['mean']:.3f} ± {p['std']:.3f} | {s['mean']:.4f} ± {s['std']:.4f} "
              f"| {gain} | {p.get('share_of_ceiling', '–')} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=Path("data/quality"))
    p.add_argument("--preset", default="tiny")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-evaluate", action="store_true", help="skip EvaluateTargets")
    args = p.parse_args()
    kinds = make_quality_corpus(args.dir, args.seed)
    configure(args.dir, args)
    start = time.time()
    result = luigi.build([BuildDataset()], local_scheduler=True, workers=args.workers,
                         detailed_summary=True)
    if not result.scheduling_succeeded:
        raise SystemExit(result.summary_text)
    print(f"build: {time.time() - start:.0f} s")
    shards = ShardSet(WriteShards().out_dir / DATASET)
    references = truth.reference_index(args.dir / "clean")
    print_truth(shards, references, kinds)
    print_fusion_by_c(references, args.workers)
    print("\nMeasureTruth:", json.dumps(read_json(MeasureTruth(), TRUTH_JSON)["overall"]))
    if not args.no_evaluate:
        print_evaluation(read_json(EvaluateTargets(), EVALUATION_JSON))


if __name__ == "__main__":
    main()
