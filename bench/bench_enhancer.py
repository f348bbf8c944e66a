"""Enhancer throughput on CPU: training steps, tiled inference, and our RCAN against BasicSR's.

    .venv/bin/python -m bench.bench_enhancer [--threads 1] [--repeats 3] [--paper-batch 1]

1. Training steps per second (one generator + one discriminator update, pipeline.train.enhancer) for
   RCAN and ELAN at the tiny and paper sizes of luigi.cfg ([tiny.TrainEnhancer] over
   [paper.TrainEnhancer]): tiny at its batch and crop, paper at its crop (96) but
   `--paper-batch` images (the paper's 16 would take minutes per step on a CPU). The tiny
   rows are also timed with the perceptual term on a VGG19 of torchvision's widths (random
   weights, same cost as the ImageNet file) to show what the perceptual loss costs.
2. Tiled inference megapixels per second (pipeline.train.enhancer.enhance, [*.EnhanceHR] tile and
   overlap): tiny models on a 512x512 photo, paper models on a 256x256 crop (one tile).
3. Forward + backward (L1 against a target) of the paper-size RCAN against BasicSR's RCAN
   (basicsr.archs.rcan_arch.RCAN from basicsr-fixed) with upscale=1: its `Upsample(1)` is
   empty, so both are the same network (64 channels, 10 groups x 20 RCABs, reduction 16, the
   same 15.30 M parameters: checked below); BasicSR adds only its mean shift and x255
   scaling. Interleaved in one process; best and median of `repeats`.

Times are reported on two clocks: process CPU time (steady on a shared machine when run with
`--threads 1`) and wall time. Rates are per best run.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.vgg import cfgs, make_layers

import tasks  # noqa: F401  (loads the packaged luigi.cfg)
from models.rcan import RCAN
from pipeline.image.sample import copy_sample_corpus
from pipeline.train.enhancer import build_generator, build_training, enhance
from pipeline.train.loss_settings import LossWeights
from pipeline.train.losses import PerceptualLoss, vgg19_features
from tasks.config import section


def preset(name: str, stage: str) -> dict[str, str]:
    """[<name>.<stage>] over [paper.<stage>], raw strings."""
    values = section(f"paper.{stage}")
    if name != "paper":
        values.update(section(f"{name}.{stage}"))
    return values


def times(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Best wall and best process-CPU seconds of `repeats` calls after `warmup` calls. On a
    shared machine the CPU clock (one thread) is the steadier of the two."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def real_width_vgg() -> PerceptualLoss:
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}
    return PerceptualLoss(vgg19_features(state))


def training_rows(repeats: int, paper_batch: int, skip_paper: bool) -> list[list[str]]:
    rows = []
    vgg = real_width_vgg()
    for name in ("tiny",) if skip_paper else ("tiny", "paper"):
        cfg = preset(name, "TrainEnhancer")
        batch = int(cfg["batch_size"]) if name == "tiny" else paper_batch
        crop = int(cfg["crop"])
        for backbone in ("rcan", "elan"):
            for perceptual in ((None, vgg) if name == "tiny" else (None,)):
                training = build_training(backbone, json.loads(cfg[backbone]),
                                          json.loads(cfg["discriminator"]), perceptual,
                                          LossWeights(**json.loads(cfg["losses"])),
                                          float(cfg["lr"]), [10**9], seed=0)
                x, y = torch.rand(batch, 3, crop, crop), torch.rand(batch, 3, crop, crop)
                # The step index only sets the learning rate (no milestone is reached here).
                tiny = name == "tiny"
                wall, cpu = times(functools.partial(training.step, 0, x, y),
                                  repeats if tiny else 2, warmup=1 if tiny else 0)
                label = f"{name} {backbone}" + (" + VGG19 perceptual" if perceptual else "")
                params = sum(p.numel() for p in training.generator.parameters())
                rows.append([label, f"{params / 1e6:.3f}", f"{batch}x{crop}x{crop}",
                             f"{1 / cpu:.3g}", f"{batch / cpu:.3g}", f"{1 / wall:.3g}"])
                print(" | ".join(rows[-1]), flush=True)
    return rows


def inference_rows(repeats: int, skip_paper: bool) -> list[list[str]]:
    import tempfile

    from pipeline.store.imageio import read_rgb

    with tempfile.TemporaryDirectory() as tmp:
        photo = read_rgb(next(p for p in copy_sample_corpus(tmp) if p.name == "astronaut.png"))
    rows = []
    for name in ("tiny",) if skip_paper else ("tiny", "paper"):
        train_cfg, cfg = preset(name, "TrainEnhancer"), preset(name, "EnhanceHR")
        image = np.ascontiguousarray(photo[:512, :512] if name == "tiny" else photo[:256, :256])
        for backbone in ("rcan", "elan"):
            torch.manual_seed(0)
            model = build_generator(backbone, json.loads(train_cfg[backbone])).eval()
            torch.nn.init.normal_(model.tail.weight, std=0.01)
            run = functools.partial(enhance, model, image, int(cfg["tile"]), int(cfg["overlap"]))
            wall, cpu = times(run, repeats if name == "tiny" else 1, warmup=int(name == "tiny"))
            mp = image.shape[0] * image.shape[1] / 1e6
            rows.append([f"{name} {backbone}", f"{image.shape[1]}x{image.shape[0]}",
                         f"{cfg['tile']}/{cfg['overlap']}", f"{mp / cpu:.3g}", f"{mp / wall:.3g}"])
            print(" | ".join(rows[-1]), flush=True)
    return rows


def rcan_vs_basicsr(repeats: int, size: int, batch: int) -> list[list[str]]:
    from basicsr.archs.rcan_arch import RCAN as BasicSRRCAN

    torch.manual_seed(0)
    ours = RCAN(n_feats=64, n_groups=10, n_blocks=20, reduction=16).train()
    theirs = BasicSRRCAN(3, 3, num_feat=64, num_group=10, num_block=20, squeeze_factor=16,
                         upscale=1).train()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    if n_ours != n_theirs:
        raise SystemExit(f"not the same network: {n_ours} vs {n_theirs} parameters")
    x, y = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size, size)

    def fwd_bwd(model):
        model.zero_grad(set_to_none=True)
        F.l1_loss(model(x), y).backward()

    cases = {"ours (models.rcan.RCAN)": ours, "BasicSR RCAN(upscale=1)": theirs}
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for model in cases.values():
        fwd_bwd(model)  # warm-up
    for _ in range(repeats):
        for name, model in cases.items():
            w, c = times(functools.partial(fwd_bwd, model), 1, warmup=0)
            wall[name].append(w)
            cpu[name].append(c)
    base = "BasicSR RCAN(upscale=1)"
    med = statistics.median
    rows = []
    for name in cases:
        rows.append([name, f"{n_ours / 1e6:.3f}", f"{batch}x{size}x{size}",
                     f"{min(cpu[name]):.2f}", f"{med(cpu[name]):.2f}", f"{min(wall[name]):.2f}",
                     f"{min(cpu[base]) / min(cpu[name]):.3f}x",
                     f"{med(cpu[base]) / med(cpu[name]):.3f}x",
                     f"{min(wall[base]) / min(wall[name]):.3f}x"])
        print(" | ".join(rows[-1]), flush=True)
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paper-batch", type=int, default=1)
    ap.add_argument("--rcan-size", type=int, default=96, help="crop side of the RCAN comparison")
    ap.add_argument("--skip-paper", action="store_true", help="tiny sizes only (quick)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("\n## RCAN forward + backward, paper size\n")
    rcan = rcan_vs_basicsr(args.repeats, args.rcan_size, args.paper_batch)
    print("\n## Training steps\n")
    train = training_rows(args.repeats, args.paper_batch, args.skip_paper)
    print("\n## Tiled inference\n")
    infer = inference_rows(args.repeats, args.skip_paper)
    print("\n" + table(["RCAN fwd+bwd", "M params", "input", "best CPU s", "median CPU s",
                        "best wall s", "BasicSR / ours (best CPU)", "(median CPU)",
                        "(best wall)"], rcan))
    print("\n" + table(["training step", "G M params", "batch", "steps/s (CPU)",
                        "images/s (CPU)", "steps/s (wall)"], train))
    print("\n" + table(["inference", "image", "tile/overlap", "MP/s (CPU)", "MP/s (wall)"],
                        infer))


if __name__ == "__main__":
    main()
