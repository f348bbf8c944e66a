"""VQ-VAE-2 training speed on CPU and where one training step spends its time.

    .venv/bin/python -m bench.bench_vqvae [--paper-batch 4] [--tiny-batch 8] [--steps 3]
                                          [--threads 1]

Runs TrainVQVAE2's step (crops from the sample photos held in memory, pipeline.train.vqvae.
train_step, EpochStats logging) at the paper size (DESIGN model, 256x256 crops) and at the
tiny size (luigi.cfg [tiny.TrainVQVAE2]) and reports training images per second. Then it
profiles steps with torch.profiler: the share of step time inside convolution kernels
(forward and backward) and, outside them, the time in data loading, quantisation, EMA
codebook updates, logging (code histograms, perplexity) and the optimiser. Baseline, in the
same process: the reference quantiser (rosinality: full distance expansion, one-hot matrix,
one-hot matmul for the EMA sums) in place of ours (addmm distances, bincount / index_add_).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable

import luigi.configuration
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

import tasks  # noqa: F401  (loads luigi.cfg)
from models.vqvae2 import VQVAE2, Quantize
from pipeline.image.ingest import decode_hr
from pipeline.image.sample import copy_sample_corpus
from pipeline.train import vqvae as vq
from pipeline.train.feed import AlignedCrops, CropBatches

SCOPES = ("data", "quantise", "ema", "logging", "optimiser")


def reference_forward(self: Quantize, x: torch.Tensor):
    """rosinality's Quantize.forward (one-hot EMA), for timing only."""
    flat = x.reshape(-1, self.dim)
    dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed
            + self.embed.pow(2).sum(0, keepdim=True))
    _, codes = (-dist).max(1)
    onehot = F.one_hot(codes, self.n_embed).type(flat.dtype)
    quantised = F.embedding(codes, self.embed.t()).view_as(x)
    if self.training:
        with torch.no_grad(), record_function("ema"):
            self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
            self.embed_avg.mul_(self.decay).add_(flat.detach().t() @ onehot, alpha=1 - self.decay)
            n = self.cluster_size.sum()
            size = (self.cluster_size + self.eps) / (n + self.n_embed * self.eps) * n
            self.embed.copy_(self.embed_avg / size.unsqueeze(0))
    commitment = (quantised.detach() - x).pow(2).mean()
    return x + (quantised - x).detach(), commitment, codes.view(x.shape[:-1])


def scoped(name: str, fn: Callable) -> Callable:
    def wrapper(*args, **kw):
        with record_function(name):
            return fn(*args, **kw)
    return wrapper


@contextlib.contextmanager
def instrumented(reference: bool):
    """Label quantisation, EMA and logging for the profiler; optionally swap in the
    reference quantiser."""
    saved = (Quantize.forward, Quantize.ema_update, vq.perplexity, vq.EpochStats.add)
    Quantize.forward = scoped("quantise", reference_forward if reference else Quantize.forward)
    Quantize.ema_update = scoped("ema", Quantize.ema_update)
    vq.perplexity = scoped("logging", vq.perplexity)
    vq.EpochStats.add = scoped("logging", vq.EpochStats.add)
    try:
        yield
    finally:
        Quantize.forward, Quantize.ema_update, vq.perplexity, vq.EpochStats.add = saved


class Trainer:
    """TrainVQVAE2's step with a fixed model size, crop and batch."""

    def __init__(self, images, config: dict, crop: int, batch: int):
        torch.manual_seed(0)
        self.batches = CropBatches({str(j): im for j, im in enumerate(images)},
                                   [[str(j)] for j in range(len(images))],
                                   AlignedCrops(crop, flips=4), batch, "bench")
        self.model = VQVAE2(**config)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=3e-4)
        self.stats = vq.EpochStats(self.model.quantize_t.n_embed)
        opt_step = self.opt.step
        self.opt.step = scoped("optimiser", opt_step)
        self.i = 0

    def step(self) -> None:
        with record_function("data"):
            (x,) = self.batches[self.i]
            x = x.mul_(2).sub_(1)
        losses, codes = vq.train_step(self.model, self.opt, x)
        self.stats.add(losses, codes)
        self.i += 1


def images_per_second(trainer: Trainer, steps: int) -> float:
    trainer.step()  # warm-up (and data init of the codebooks)
    best = float("inf")
    for _ in range(steps):
        t = time.perf_counter()
        trainer.step()
        best = min(best, time.perf_counter() - t)
    return trainer.batch / best


def profile_step(trainer: Trainer, steps: int) -> dict[str, float]:
    """Shares of the profiled step wall time: conv kernels (fwd, bwd) and each labelled scope."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(steps):
            trainer.step()
        wall = time.perf_counter() - t
    conv_fwd = conv_bwd = 0.0
    scopes = dict.fromkeys(SCOPES, 0.0)
    for e in prof.key_averages():
        name = e.key.lower()
        if "conv" in name and "backward" in name:
            conv_bwd += e.self_cpu_time_total
        elif "conv" in name:
            conv_fwd += e.self_cpu_time_total
        elif e.key in scopes:
            scopes[e.key] = e.cpu_time_total
    scopes["quantise"] -= scopes["ema"]  # quantise includes its EMA update
    us = wall * 1e6
    out = {"conv forward": conv_fwd / us, "conv backward": conv_bwd / us}
    out.update({k: v / us for k, v in scopes.items()})
    out["outside conv"] = 1.0 - out["conv forward"] - out["conv backward"]
    return out


def tiny_config() -> tuple[dict, int, int]:
    cfg = luigi.configuration.get_config()
    section = "tiny.TrainVQVAE2"
    return (json.loads(cfg.get(section, "model")), int(cfg.get(section, "crop")),
            int(cfg.get(section, "batch_size")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paper-batch", type=int, default=4,
                    help="paper-size batch (the paper preset uses 16; 4 keeps CPU runs short)")
    ap.add_argument("--tiny-batch", type=int, default=None, help="default: luigi.cfg tiny")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per case (best of)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared machine, two OpenMP threads mostly "
                         "wait for each other and blur the shares)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        images = [decode_hr(p, 256, 10**8).rgb for p in copy_sample_corpus(tmp)]
    tiny_model, tiny_crop, tiny_batch = tiny_config()
    paper_model = json.loads(luigi.configuration.get_config().get("paper.TrainVQVAE2", "model"))
    cases = {"paper (256², 128 ch, 512x64 codes)": (paper_model, 256, args.paper_batch),
             f"tiny ({tiny_crop}², {tiny_model['channel']} ch, {tiny_model['n_embed']}x"
             f"{tiny_model['embed_dim']} codes)": (tiny_model, tiny_crop,
                                                  args.tiny_batch or tiny_batch)}
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"{'case':44s} {'batch':>5s} {'ours img/s':>11s} {'reference quantiser':>20s} "
          f"{'ratio':>6s}")
    for name, (config, crop, batch) in cases.items():
        rates = {}
        for reference in (False, True):
            with instrumented(reference):
                rates[reference] = images_per_second(Trainer(images, config, crop, batch),
                                                     args.steps)
        print(f"{name:44s} {batch:5d} {rates[False]:11.2f} {rates[True]:20.2f} "
              f"{rates[False] / rates[True]:5.2f}x")
    print("\nshare of one training step's wall time (torch.profiler, "
          f"{args.steps} steps after a warm-up):")
    rows = {}
    for name, (config, crop, batch) in cases.items():
        for reference in (False, True):
            with instrumented(reference):
                trainer = Trainer(images, config, crop, batch)
                trainer.step()
                rows[(name, reference)] = profile_step(trainer, args.steps)
    keys = list(next(iter(rows.values())))
    header = "".join(f"{k:>15s}" for k in keys)
    print(f"{'case':58s}{header}")
    for (name, reference), shares in rows.items():
        label = f"{name} {'[reference quantiser]' if reference else ''}"
        print(f"{label:58s}" + "".join(f"{100 * shares[k]:14.1f}%" for k in keys))


if __name__ == "__main__":
    main()
