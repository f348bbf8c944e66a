"""IQA scoring throughput, the cost of creating metrics per patch, and margin calibration.

    .venv/bin/python -m bench.bench_iqa [--size 512] [--patches 16] [--metrics niqe,piqe,gmsd]
    .venv/bin/python -m bench.bench_iqa --demo            # the tiny demo's ScorePatches load
    .venv/bin/python -m bench.bench_iqa --calibrate --size 128 --preset tiny

Speed: patches of `size` cut from the sample photographs (resized up where smaller), scored per
metric with gtforge's batch size and with batch 1 (ratio = batched / batch 1), and the
metric created once per process against created again for every patch (pyiqa.create_metric
per patch, as a naive loop would; ratio = once / per patch). Timings interleave in one process.

--calibrate: label rates of the configured metrics and margins ([<preset>.ScorePatches] in
luigi.cfg) on every textured patch of the sample corpus (HGGT texture test: luma std >= 30,
3x3 Laplacian variance >= 30) for candidates that are identical, noised (Gaussian sigma 20),
blurred (5x5 box), sharpened (unsharp mask 1.5, sigma 1) and denoised (bilateral 5/20/3),
plus the spread of each metric's vote statistic, to choose margins (docs/ANNOTATION.md).
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from pipeline.image.conversions import to_tensor
from pipeline.image.patches import texture_mask
from pipeline.image.sample import copy_sample_corpus
from pipeline.quality import annotate, iqa, voting
from pipeline.store.imageio import read_rgb

CORPUS = "/tmp/gtforge-bench-sample"


def sample_patches(size: int, count: int) -> np.ndarray:
    """`count` uint8 RGB size x size crops of the sample photos (resized up if smaller)."""
    out = []
    photos = [read_rgb(p) for p in copy_sample_corpus(CORPUS)]
    while len(out) < count:
        rgb = photos[len(out) % len(photos)]
        if min(rgb.shape[:2]) < size:
            f = size / min(rgb.shape[:2])
            rgb = cv2.resize(rgb, (max(size, round(rgb.shape[1] * f)),
                                   max(size, round(rgb.shape[0] * f))), cv2.INTER_CUBIC)
        out.append(rgb[:size, :size])
    return np.stack(out)


def textured_patches(size: int) -> np.ndarray:
    """Every size x size crop (step size/2) of the sample photos that passes HGGT's test."""
    out = []
    for path in copy_sample_corpus(CORPUS):
        rgb = read_rgb(path)
        ys, xs = np.mgrid[0:rgb.shape[0] - size + 1:size // 2, 0:rgb.shape[1] - size + 1:size // 2]
        pos = np.stack([ys.ravel(), xs.ravel()], 1)
        if not len(pos):
            continue
        ok = texture_mask(rgb, pos, size, 30.0, 30.0, "laplacian_var")
        out += [rgb[y:y + size, x:x + size] for y, x in pos[ok]]
    return np.stack(out)


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def speed(args) -> None:
    patches = sample_patches(args.size, args.patches)
    print(f"{len(patches)} patches of {args.size}x{args.size}, {torch.get_num_threads()} threads")
    print(f"{'metric':10s} {'batch':>5s} {'patch/s':>9s} {'batch 1':>9s} {'ratio':>6s} "
          f"{'create s':>9s} {'per-patch create':>17s} {'once/per':>8s}")
    for name in args.metrics.split(","):
        info = iqa.metric_info(name)
        ref = patches if info.full_reference else None
        t = time.perf_counter()
        iqa.create_metric(name)
        create = time.perf_counter() - t
        iqa.score_images(name, patches[:2], reference=None if ref is None else ref[:2])  # warm
        batched = best_of(lambda n=name, r=ref: iqa.score_images(n, patches, reference=r),
                          args.repeats)
        single = best_of(lambda n=name, r=ref: iqa.score_images(n, patches, reference=r,
                                                                  batch_size=1), args.repeats)

        def per_patch(n=name, r=ref):  # a new pyiqa metric for every patch
            import pyiqa

            kwargs = {"pretrained_model_path": str(iqa.niqe_params_file())} if n == "niqe" else {}
            for i in range(len(patches)):
                metric = pyiqa.create_metric(n, device="cpu", **kwargs)
                x = to_tensor(patches[i])
                with torch.no_grad():
                    metric(x) if r is None else metric(x, to_tensor(r[i]))

        naive = best_of(per_patch, 1)
        n = len(patches)
        print(f"{name:10s} {iqa.BATCH_SIZES.get(name, 8):5d} {n / batched:9.1f} {n / single:9.1f} "
              f"{single / batched:6.2f} {create:9.3f} {n / naive:13.1f} p/s {naive / batched:8.1f}")


def demo(args) -> None:
    """The tiny demo's ScorePatches: `patches` 128x128 patches x 6 versions, default metrics."""
    patches = sample_patches(128, args.patches)
    rng = np.random.default_rng(0)
    cands = np.clip(patches[:, None] + rng.normal(0, 5, (len(patches), 5, *patches.shape[1:])),
                    0, 255).astype(np.uint8)
    metrics = args.metrics.split(",")
    t = time.perf_counter()
    for m in metrics:
        iqa.create_metric(m)
    create = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, len(patches), 64):  # ScorePatches' chunk
        annotate.score_patches(patches[start:start + 64], cands[start:start + 64], metrics)
        annotate.difference(patches[start:start + 64], cands[start:start + 64], "mad")
    score = time.perf_counter() - t
    print(f"{len(patches)} patches x 6 versions of 128x128, metrics {metrics}: create "
          f"{create:.1f} s, score {score:.1f} s ({len(patches) * 6 / score:.0f} versions/s)")


def calibrate(args) -> None:
    from tasks.config import preset_setting
    from tasks.score_patches import ScorePatches

    params = dict(ScorePatches.get_params())
    settings = {k: preset_setting("ScorePatches", k, params[k]) for k in ("metrics", "margins",
                                                                         "fr_policy")}
    if args.preset:
        import luigi.configuration

        luigi.configuration.get_config().set("gtforge", "preset", args.preset)
        settings = {k: preset_setting("ScorePatches", k, params[k]) for k in settings}
    metrics = list(settings["metrics"])
    infos = [iqa.metric_info(m) for m in metrics]
    margins = [float(settings["margins"][m]) for m in metrics]
    original = textured_patches(args.size)
    rng = np.random.default_rng(0)
    versions = {
        "identical": original.copy(),
        "noise20": np.clip(original + rng.normal(0, 20, original.shape), 0, 255).astype(np.uint8),
        "blur5x5": np.stack([cv2.blur(p, (5, 5)) for p in original]),
        "sharpen": np.stack([cv2.addWeighted(p, 1.5, cv2.GaussianBlur(p, (0, 0), 1.0), -0.5, 0)
                             for p in original]),
        "denoise": np.stack([cv2.bilateralFilter(p, 5, 20, 3) for p in original]),
    }
    cands = np.stack(list(versions.values()), axis=1)
    scores = annotate.score_patches(original, cands, metrics)
    fr = [i.full_reference for i in infos]
    votes = voting.vote(scores, margins, [i.lower_better for i in infos], fr)
    labels = voting.label(votes, fr, settings["fr_policy"])
    print(f"{len(original)} textured {args.size}x{args.size} patches of the sample corpus; "
          f"metrics {metrics}, margins {margins}, fr_policy {settings['fr_policy']}")
    print(f"{'candidate':10s} {'P':>6s} {'S':>6s} {'N':>6s}   improvement per metric "
          f"(score change in the better direction): 5% / 50% / 95%")
    sign = np.where([i.lower_better for i in infos], -1.0, 1.0)
    gain = (scores[:, 1:] - scores[:, :1]) * sign
    for k, name in enumerate(versions):
        rates = [(labels[:, k] == v).mean() for v in (1, 0, -1)]
        spread = "  ".join(f"{m} " + "/".join(f"{q:.3g}" for q in np.percentile(gain[:, k, j],
                                                                             [5, 50, 95]))
                           for j, m in enumerate(metrics))
        print(f"{name:10s} {rates[0]:6.1%} {rates[1]:6.1%} {rates[2]:6.1%}   {spread}")
    print("Negative / Positive rate under each fr_policy:")
    for policy in voting.FR_POLICIES:
        other = voting.label(votes, fr, policy)
        print(f"  {policy:7s} " + "  ".join(
            f"{name} {(other[:, k] == -1).mean():.1%}/{(other[:, k] == 1).mean():.1%}"
            for k, name in enumerate(versions)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--patches", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--metrics", default="niqe,piqe,gmsd,ssim,entropy")
    ap.add_argument("--demo", action="store_true")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--preset", choices=["tiny", "paper"], default=None)
    args = ap.parse_args()
    if args.calibrate:
        calibrate(args)
    elif args.demo:
        demo(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
