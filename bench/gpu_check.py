"""The GPU check: is the paper preset fed, fast and within memory on one device?

    bench/gpu_check.sh                       # a GPU machine: paper sizes, under 8 minutes
    bench/gpu_check.sh --device cpu --quick  # anywhere: every row, sizes cut to fit a CPU

One table of rows:
- train <network> <fp32|bf16>: ms per step of each training at the paper preset's model size
  and batch (--quick: batch 2 and half the crop), after one warm-up step; bf16 / fp32 ratio.
- infer <network> <fp32|bf16>: megapixels per second of the stage's own tiled function
  (EnhanceHR, SuperResolveGT, VQVAEDegradeLR) on one 1024^2 photo (--quick: 128^2, no
  warm-up call).
- feed: the enhancer input pipeline's crops/s with one worker per core, next to the crops/s
  the enhancer training consumes (batch / step time at bf16 on the device).
- build: a paper-preset `gtforge build` of 2 photos with every training cut to a few steps
  (--quick on a CPU: also the tiny preset's model sizes), wall seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.store.seeding import rng
from pipeline.train import cfmg, enhancer, sr, vqvae
from pipeline.train.enhancer import DegradedPairs
from pipeline.train.feed import CropBatches, Feed
from pipeline.train.loss_settings import LossWeights
from pipeline.train.precision import Precision
from tasks.config import section
from tasks.degrade import load_recipe

PRECISIONS = ("fp32", "bf16")


def paper(stage: str, name: str):
    """A [paper.<stage>] setting, parsed as JSON."""
    return json.loads(section(f"paper.{stage}")[name])


def synchronised(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def ms_per_call(fn: Callable[[], object], calls: int, device: torch.device,
                warm_up: bool = True) -> float:
    """Milliseconds per call of `fn`, after one warm-up call unless not `warm_up` (device
    work included)."""
    sync = synchronised(device)
    if warm_up:
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return 1000 * (time.perf_counter() - start) / calls


def batch(shape: tuple[int, ...], device: torch.device, seed: str) -> torch.Tensor:
    return torch.from_numpy(rng(seed).random(shape, dtype=np.float32)).to(device)


def trainings(device: torch.device, quick: bool) -> dict[str, Callable[[Precision], Callable]]:
    """Per network: precision -> one training step at the paper size on made-up batches."""
    cut = (lambda b, c: (2, c // 2)) if quick else (lambda b, c: (b, c))
    weights = LossWeights(**{**paper("TrainEnhancer", "losses"), "perceptual": 0.0})

    def enhancer_step(backbone: str) -> Callable[[Precision], Callable]:
        b, c = cut(paper("TrainEnhancer", "batch_size"), paper("TrainEnhancer", "crop"))

        def make(p: Precision) -> Callable:
            t = enhancer.build_training(backbone, paper("TrainEnhancer", backbone),
                                        paper("TrainEnhancer", "discriminator"), None, weights,
                                        1e-4, [10**6], 0, device, p)
            x, y = batch((b, 3, c, c), device, "x"), batch((b, 3, c, c), device, "y")
            return lambda: t.step(0, x, y)
        return make

    def sr_step(p: Precision) -> Callable:
        b, c = cut(paper("TrainSR", "batch_size"), paper("TrainSR", "crop"))
        t = sr.build_training(4, paper("TrainSR", "model"), 2e-4, 0, device, p)
        x, y = batch((b, 3, c, c), device, "x"), batch((b, 3, 4 * c, 4 * c), device, "y")
        return lambda: t.step(0, x, y)

    def cfmg_step(p: Precision) -> Callable:
        b, c = cut(paper("TrainMaskGenerator", "batch_size"), paper("TrainMaskGenerator", "crop"))
        prior = cfmg.Perceptual(paper("TrainMaskGenerator", "metrics"), device, None)
        t = cfmg.build_training(4, paper("TrainMaskGenerator", "model"), prior, lr=1e-4,
                                weight_decay=0.01, warmup=10, total=1000, grad_clip=1.0,
                                seed=0, device=device, precision=p)
        x, clean = batch((b, 4, 3, c, c), device, "x"), batch((b, 3, c, c), device, "clean")
        return lambda: t.step(0, x, 0.5, clean)

    def vqvae_step(p: Precision) -> Callable:
        b, c = cut(paper("TrainVQVAE2", "batch_size"), paper("TrainVQVAE2", "crop"))
        t = vqvae.build_training(paper("TrainVQVAE2", "model"), 3e-4, 0.25, 10**6, 0, device, p)
        x = batch((b, 3, c, c), device, "x") * 2 - 1
        return lambda: t.step(0, x)

    return {"enhancer rcan": enhancer_step("rcan"), "enhancer elan": enhancer_step("elan"),
            "sr rrdb x4": sr_step, "cfmg": cfmg_step, "vqvae2": vqvae_step}


def inferences(device: torch.device, quick: bool) -> dict[str, Callable[[Precision], Callable]]:
    """Per network: precision -> the stage's tiled function on one photo (side `photo_side`)."""
    from models.rrdb import RRDBNet
    from models.vqvae2 import VQVAE2

    side = 128 if quick else 1024
    photo = rng("photo").integers(0, 256, (side, side, 3), dtype=np.uint8)

    def enhancer_run(backbone: str) -> Callable[[Precision], Callable]:
        def make(p: Precision) -> Callable:
            model = p.prepare(enhancer.build_generator(backbone, paper("TrainEnhancer", backbone))
                              .to(device).eval())
            tile, overlap = paper("EnhanceHR", "tile"), paper("EnhanceHR", "overlap")
            return lambda: enhancer.enhance(model, photo, tile, overlap, device, p)
        return make

    def sr_run(p: Precision) -> Callable:
        model = p.prepare(RRDBNet(scale=4, **paper("TrainSR", "model")).to(device).eval())
        tile, overlap = paper("SuperResolveGT", "tile"), paper("SuperResolveGT", "overlap")
        return lambda: sr.super_resolve(model, photo, 4, tile, overlap, device, 3.0, p)

    def vqvae_run(p: Precision) -> Callable:
        model = p.prepare(VQVAE2(**paper("TrainVQVAE2", "model")).to(device).eval())
        return lambda: vqvae.reconstruct(model, photo, device, precision=p)

    return {"enhancer rcan": enhancer_run("rcan"), "enhancer elan": enhancer_run("elan"),
            "sr rrdb x4": sr_run, "vqvae2": vqvae_run}


def rows_by_precision(makers: dict[str, Callable[[Precision], Callable]], device: torch.device,
                      calls: int, unit: Callable[[float], float],
                      warm_up: bool = True) -> list[list[str]]:
    """Per network, fp32 then bf16: the `unit` of ms per call (4 significant digits), and
    bf16 over fp32."""
    rows = []
    for name, make in makers.items():
        values = {}
        for dtype in PRECISIONS:
            p = Precision(dtype, channels_last=device.type == "cuda")
            values[dtype] = unit(ms_per_call(make(p), calls, device, warm_up))
        rows.append([name, f"{values['fp32']:.4g}", f"{values['bf16']:.4g}",
                     f"{values['bf16'] / values['fp32']:.2f}"])
    return rows


def feed_rows(device: torch.device, quick: bool, step_ms: float) -> list[list[str]]:
    """The enhancer feed with one worker per core (at most 8) against the training's appetite
    (paper batch / `step_ms`)."""
    b, c = (2, 48) if quick else (paper("TrainEnhancer", "batch_size"), 96)
    store = {f"p{i}": rng("feed", i).integers(0, 256, (1356, 2040, 3), dtype=np.uint8)
             for i in range(4)}
    batches = CropBatches(store, [[k] for k in store], DegradedPairs(c, load_recipe("noise")),
                          b, "gpu-check")
    workers = min(os.cpu_count() or 1, 8)
    steps = 20 if quick else 200
    feed = Feed(batches, steps + 1, workers)
    feed(0)
    start = time.perf_counter()
    for i in range(1, steps + 1):
        feed(i)
    made = steps * b / (time.perf_counter() - start)
    eaten = b / (step_ms / 1000)
    return [[f"feed {c}^2 enhancer pairs, {workers} workers", f"{made:.3g} crops/s",
             f"rcan bf16 training eats {eaten:.3g} crops/s", f"{made / eaten:.3g}x"]]


def cut_config(quick: bool) -> str:
    """luigi.cfg overrides: every paper training cut to a few dozen steps (--quick: 4 steps,
    batch 2 and the tiny preset's model sizes)."""
    steps = 4 if quick else 24
    cuts = {"TrainEnhancer": {"iterations": steps, "milestones": f"[{steps}]"},
            "TrainSR": {"iterations": steps}, "TrainJudge": {"iterations": steps, "bases": 200},
            "TrainMaskGenerator": {"iterations": steps, "warmup": 2},
            "TrainVQVAE2": {"max_epochs": 1, "crops_per_image": 4},
            "VQVAEDegradeLR": {"epochs": 1}}
    if quick:
        sizes = {"TrainEnhancer": ("rcan", "elan", "discriminator"), "TrainSR": ("model",),
                 "TrainMaskGenerator": ("model",), "TrainVQVAE2": ("model",),
                 "TrainJudge": ("width",)}
        for stage, names in sizes.items():
            cuts[stage].update({n: section(f"tiny.{stage}")[n] for n in names}, batch_size=2)
    return "".join(f"[paper.{stage}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
                   for stage, values in cuts.items())


def build_rows(device: torch.device, quick: bool, root: Path) -> list[list[str]]:
    """A paper-preset build of 2 photos (768x640, made from the sample photos) with the
    trainings cut: wall seconds and the peak RSS of the build process."""
    import cv2
    import skimage.data

    photos = root / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee"):
        image = cv2.resize(getattr(skimage.data, name)(), (768, 640))
        cv2.imwrite(str(photos / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (root / "cut.cfg").write_text(cut_config(quick))
    command = [sys.executable, "-m", "tasks.cli", "build", "--local-scheduler",
               "--preset", "paper", "--device", str(device), "--input-dir", str(photos),
               "--workdir", str(root / "work"), "--out-dir", str(root / "out")]
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(root / "cut.cfg")}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"the paper build failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return [["build: paper preset, 2 photos, trainings cut", f"{seconds:.0f} s",
             f"peak RSS {peak:.1f} GB", "ok"]]


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="sizes cut to fit a CPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    calls = 1 if args.quick else 10
    train = rows_by_precision(trainings(device, args.quick), device, calls, lambda ms: ms)
    pixels = (128 if args.quick else 1024) ** 2 / 1e6
    infer = rows_by_precision(inferences(device, args.quick), device, 1 if args.quick else 3,
                              lambda ms: pixels / (ms / 1000), warm_up=not args.quick)
    bf16_step = float(train[0][2])
    feed = feed_rows(device, args.quick, bf16_step)
    with tempfile.TemporaryDirectory(prefix="gtforge-gpu-check-") as root:
        build = build_rows(device, args.quick, Path(root))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gtforge GPU check on {name}{' (--quick: cut sizes)' if args.quick else ''}")
    print(table("training steps", ["network", "fp32 ms", "bf16 ms", "bf16/fp32"], train))
    print(table("tiled inference", ["network", "fp32 MP/s", "bf16 MP/s", "bf16/fp32"], infer))
    print(table("input and build", ["what", "measured", "against", "ratio"], feed + build))


if __name__ == "__main__":
    main()
