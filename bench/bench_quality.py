"""The quality benchmark: a build judged against a truth it never sees.

    .venv/bin/python -m bench.bench_quality [--dir data/quality] [--preset tiny] [--workers 2]
                                            [--threads 1] [--no-evaluate] [--seed 0]
                                            [--folds k] [--heldout-lr gt|clean]
                                            [--loss l1|mse] [--every-crop]

1. Makes the benchmark set once (pipeline.image.sample.make_quality_corpus): the sample photographs
   as clean references, and an imperfect GT of each, blur-led and noise-led in turn.
2. Builds the dataset from the imperfect GTs only ([gtforge] references points the report at
   the clean ones; evaluate = true also runs EvaluateTargets).
3. Prints markdown tables: per candidate, the distance to the clean reference against the
   original GT's (PSNR, SSIM, edge PSNR), overall and per kind of imperfection (with
   --every-crop also on the patches the texture test would keep and on those it would drop);
   the labels' confusion matrix against the oracle; `fused` at c = 0, the configured c and 1 (mean
   |fused − GT|, high-frequency energy against the GT's, PSNR gain towards the clean photo);
   the Eq. 1 and the VQ-VAE-2 LR against the clean LR of the GT; and the SR networks trained
   per target, overall and per held-out photo.
Results are also in the build's report (data/quality/out/report/index.html).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import luigi
import luigi.configuration
import numpy as np
import torch

import tasks  # noqa: F401  (registers the tasks, loads luigi.cfg)
from pipeline.image.conversions import to_tensor
from pipeline.image.fusion import high_frequency_energy
from pipeline.image.ingest import read_images
from pipeline.image.patches import texture_mask
from pipeline.image.sample import make_quality_corpus
from pipeline.quality import lr_stats, results, truth
from pipeline.report import html as page
from pipeline.report import tables as report_tables
from pipeline.shards.reader import ShardSet
from pipeline.store.imageio import image_path, read_rgb
from pipeline.train.evaluate import LOSSES
from pipeline.train.vqvae import downsample
from tasks.config import preset_setting
from tasks.corpus import corpus_chunks, listing
from tasks.degrade import DegradeLR
from tasks.evaluate import HELDOUT_LR, EvaluateTargets, MeasureTruth
from tasks.fuse import FuseGT
from tasks.ingest import IngestHR
from tasks.publish import BuildDataset
from tasks.select_patches import SelectPatches
from tasks.vqvae_degrade import VQVAEDegradeLR
from tasks.write_manifest import WriteManifest
from tasks.write_shards import DATASET


def configure(root: Path, args: argparse.Namespace) -> None:
    cfg = luigi.configuration.get_config()
    values = {"preset": args.preset, "input_dir": root / "imperfect", "workdir": root / "work",
              "out_dir": root / "out", "references": root / "clean", "threads": args.threads,
              "evaluate": str(not args.no_evaluate).lower(), "seed": args.seed}
    for key, value in values.items():
        cfg.set("gtforge", key, str(value))
    if args.folds:
        cfg.set("EvaluateTargets", "folds", str(args.folds))
    if args.heldout_lr:
        cfg.set("EvaluateTargets", "heldout_lr", args.heldout_lr)
    if args.loss:
        cfg.set("EvaluateTargets", "loss", args.loss)
    if args.every_crop:  # no texture test: SelectPatches keeps every grid crop
        for key in ("std_min", "hf_min"):
            cfg.set("SelectPatches", key, "0")


def markdown(table: page.Table) -> None:
    """Print a report table as markdown, its title and caption above it."""
    print(f"\n{table.title}" + (f" ({table.caption})" if table.caption else "") + ":\n")
    print("| " + " | ".join(table.header) + " |\n" + "|---" * len(table.header) + "|")
    for row in table.rows:
        print("| " + " | ".join(map(str, row)) + " |")


def print_truth(shards: ShardSet, references: dict, kinds: dict[str, str]) -> None:
    """MeasureTruth's tables (every GT), then the candidates' table per kind of imperfection."""
    measured = results.load_truth(MeasureTruth().out_dir)
    for table in report_tables.truth_tables(measured):
        markdown(table)
    for kind in ("blur", "noise"):
        refs = {k: v for k, v in references.items() if kinds.get(f"{k}.png") == kind}
        print_candidates(shards, refs, f"{kind}-led GTs")


def print_candidates(shards: ShardSet, references: dict, title: str,
                     keep_patch: Callable[[np.ndarray], bool] | None = None) -> None:
    """The candidates' table over the samples of `references` that `keep_patch` accepts."""
    found = truth.measure_shards(shards, references, keep_patch)
    result = {"candidates": {n: t.summary() for n, t in found.items()},
              "overall": truth.overall(found), "tau_db": truth.ORACLE_TAU_DB}
    table = report_tables.truth_tables(result)[0]
    table.title = f"{title}: {table.title}"
    markdown(table)


def print_texture_split(shards: ShardSet, references: dict) -> None:
    """For a build without the texture test: the candidates' table on the patches the preset's
    test would have kept, then on those it would have dropped."""
    test = {k: preset_setting("SelectPatches", k, getattr(SelectPatches, k))
            for k in ("std_min", "hf_min", "hf_measure")}

    def textured(gt: np.ndarray) -> bool:
        return bool(texture_mask(gt, np.zeros((1, 2), int), gt.shape[0], **test)[0])

    print_candidates(shards, references, "patches the texture test keeps", textured)
    print_candidates(shards, references, "patches it drops", lambda gt: not textured(gt))


def print_evaluation(kinds: dict[str, str]) -> None:
    """EvaluateTargets' table, its per-photo gains and their mean per kind of imperfection."""
    found = results.load_evaluation(EvaluateTargets().out_dir)
    markdown(report_tables.evaluation_table(found))
    gains = found.get("photo_gains", {})
    if not gains:
        return
    markdown(report_tables.photo_gains_table(gains))
    for kind in ("blur", "noise"):
        rows = [row for photo, row in gains.items() if kinds.get(photo) == kind]
        if rows:
            means = ", ".join(f"{t} {np.mean([r[t] for r in rows]):+.3f}" for t in rows[0])
            print(f"{kind}-led held-out photos ({len(rows)}), mean ΔPSNR dB: {means}")


def fusion_rows(hr: Path, fused_dir: Path, references: dict
                ) -> dict[str, tuple[float, float, float]]:
    """Per photo of IngestHR folder `hr` (by source file name): |fused − GT| (grey levels), the
    fused image's high-frequency energy (above half Nyquist) over the GT's, and its PSNR gain
    (dB) towards the clean photo."""
    rows = {}
    for img in read_images(hr):
        gt, fused = read_rgb(image_path(hr, img.id)), read_rgb(image_path(fused_dir, img.id))
        source = listing().source(img.id)
        clean = read_rgb(truth.reference_for(source, references))
        energy = [high_frequency_energy(to_tensor(x)).mean().item() for x in (fused, gt)]
        gain = cv2.PSNR(fused, clean) - cv2.PSNR(gt, clean)
        rows[Path(source).name] = (float(np.abs(fused.astype(np.float32) - gt).mean()),
                                   energy[0] / energy[1], gain)
    return rows


def print_fusion_by_c(references: dict, kinds: dict[str, str], workers: int) -> None:
    """FuseGT at c = 0, the configured c and 1, chunk by chunk as the build made it: the means
    of `fusion_rows` over every photo and over each kind of imperfection."""
    stages = {c: [FuseGT(c=c, chunk=chunk) for chunk in corpus_chunks()]
              for c in (0.0, FuseGT().settings["c"], 1.0)}
    luigi.build([s for chunked in stages.values() for s in chunked], local_scheduler=True,
                workers=workers)
    print("\nfused by c, whole photos (HF energy: above half Nyquist, over the GT's):\n\n"
          "| c | photos | mean abs diff to GT | HF energy / GT's | ΔPSNR to clean dB |\n"
          "|---|---|---|---|---|")
    with torch.no_grad():
        for c, chunked in stages.items():
            rows = {}
            for stage in chunked:
                rows |= fusion_rows(IngestHR(chunk=stage.chunk).out_dir, stage.out_dir,
                                    references)
            for kind in ("all", "blur", "noise"):
                mad, hf, gain = np.mean([v for name, v in rows.items()
                                         if kind in ("all", kinds.get(name))], axis=0)
                label = kind if kind == "all" else f"{kind}-led"
                print(f"| {c} | {label} | {mad:.2f} | {hf:.3f} | {gain:+.2f} |")


LR_STATS = ("psnr", "ssim", "delta_e", "lowfreq_de", "noise_sigma", "sharpness_ratio")


def print_lr_stats() -> None:
    """The Eq. 1 `lq` and `lq_vqvae` of every photo against the clean LR of its GT
    (lr_stats.image_stats): the median and the 10th-90th percentile over the photos."""
    names = ("lq (Eq. 1, DegradeLR)", "lq_vqvae (VQVAEDegradeLR)")
    found: dict[str, list[dict]] = {name: [] for name in names}
    for chunk in corpus_chunks():  # the build's own stages, chunk by chunk
        hr, vqvae = IngestHR(chunk=chunk).out_dir, VQVAEDegradeLR(chunk=chunk)
        stages = dict(zip(names, (DegradeLR(chunk=chunk), vqvae), strict=True))
        scale = vqvae.settings["scale"]
        for img in read_images(hr):
            clean = downsample(read_rgb(image_path(hr, img.id)), scale)
            for name, stage in stages.items():
                lr = read_rgb(image_path(stage.out_dir, img.id))
                found[name].append(lr_stats.image_stats(clean, lr))
    print("\nLR against the clean LR of the GT, median (10th-90th percentile) over the photos:\n\n"
          "| LR | " + " | ".join(LR_STATS) + " |\n" + "|---" * (len(LR_STATS) + 1) + "|")
    for name, rows in found.items():
        cells = []
        for stat in LR_STATS:
            low, mid, high = np.percentile([r[stat] for r in rows], [10, 50, 90])
            cells.append(f"{mid:.3g} ({low:.3g}-{high:.3g})")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=Path("data/quality"))
    p.add_argument("--preset", default="tiny")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-evaluate", action="store_true", help="skip EvaluateTargets")
    p.add_argument("--folds", type=int, default=0,
                   help="EvaluateTargets folds (0: luigi.cfg's; k >= 2: every photo held out once)")
    p.add_argument("--heldout-lr", choices=HELDOUT_LR,
                   help="EvaluateTargets heldout_lr (default: luigi.cfg's)")
    p.add_argument("--loss", choices=sorted(LOSSES),
                   help="EvaluateTargets loss (default: luigi.cfg's)")
    p.add_argument("--every-crop", action="store_true",
                   help="SelectPatches without the texture test (std_min = hf_min = 0)")
    args = p.parse_args()
    kinds = make_quality_corpus(args.dir, args.seed)
    configure(args.dir, args)
    start = time.time()
    result = luigi.build([BuildDataset()], local_scheduler=True, workers=args.workers,
                         detailed_summary=True)
    if not result.scheduling_succeeded:
        raise SystemExit(result.summary_text)
    print(f"build: {time.time() - start:.0f} s")
    shards = ShardSet(WriteManifest().out_dir / DATASET)
    references = truth.reference_index(args.dir / "clean")
    print_truth(shards, references, kinds)
    if args.every_crop:
        print_texture_split(shards, references)
    print_fusion_by_c(references, kinds, args.workers)
    print_lr_stats()
    if not args.no_evaluate:
        print_evaluation(kinds)


if __name__ == "__main__":
    main()
