"""Reference trainer: what a downstream user does with gtforge shards, reading nothing else.

Two small trainings, each a plain PyTorch loop over `pipeline.shards.dataset.ShardDataset`:

- `refine` (default): a light output-refinement network, a NAFNet-style U-Net taking an image
  and a condition c in [0,1], as in "Beyond the Ground Truth" (Ryou et al.). Here it learns to
  move the photographed GT towards the enhanced target by the amount c: target(c) =
  original + c (enhanced - original), so c = 0 keeps fidelity and c = 1 gives the full
  enhancement. The enhanced target is the `fused` candidate when the shards have one (the
  paper trains its refiner on the fused GTs), else HGGT's rule (a random Positive candidate;
  samples without one are skipped); `--target` chooses another. At inference it can refine
  any image (e.g. an SR output) with a chosen c.
- `sr`: a small x`scale` SR network (NAF blocks at LR, pixel-shuffle upsampler) trained on
  (lq -> HGGT target) with L1 plus HGGT's negative loss: the output is pushed away from a
  Negative candidate where the negative's residual to the original has high local variance
  (3x3) and is not outweighed by the positive's (HGGT's get_overall_map, power 3/4), with
  weight 300.

    python -m examples.reference_trainer data/out/demo runs/refine --steps 300
    python -m examples.reference_trainer data/out/demo runs/sr --task sr --steps 300

Writes <out>/curve.csv (step, losses, L1 on a fixed held-out batch) and <out>/<task>.pt
(state dict), and prints the held-out L1 before and after training. The loader workers hand
over uint8 images and each batch becomes float32 on `--device` (auto: CUDA when present).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from models.nafblock import NAFBlock
from models.small_sr import SmallSR
from pipeline.shards.dataset import ShardBatchSampler, ShardDataset, to_float
from pipeline.shards.reader import ShardSet
from pipeline.train.device import resolve_device


class RefinerUNet(nn.Module):
    """(N,3,H,W) image in [0,1] and (N,) condition c in [0,1] -> refined (N,3,H,W).
    H and W must be multiples of 2 ** len(enc_blocks). The output is the input plus a
    learned residual (zero at initialisation: NAF blocks start as the identity)."""

    def __init__(self, width: int = 16, enc_blocks: tuple[int, ...] = (1, 1),
                 middle_blocks: int = 1, dec_blocks: tuple[int, ...] = (1, 1)):
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError("enc_blocks and dec_blocks need the same length")
        self.intro = nn.Conv2d(4, width, 3, padding=1)        # RGB + constant map of c
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        ch = width
        for n in enc_blocks:
            self.encoders.append(nn.Sequential(*[NAFBlock(ch) for _ in range(n)]))
            self.downs.append(nn.Conv2d(ch, 2 * ch, 2, stride=2))
            ch *= 2
        self.middle = nn.Sequential(*[NAFBlock(ch) for _ in range(middle_blocks)])
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(ch, 2 * ch, 1, bias=False), nn.PixelShuffle(2)))
            ch //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(ch) for _ in range(n)]))
        self.ending = nn.Conv2d(width, 3, 3, padding=1)
        nn.init.zeros_(self.ending.weight)
        nn.init.zeros_(self.ending.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        cmap = c.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        h = self.intro(torch.cat([x, cmap], 1))
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            h = encoder(h)
            skips.append(h)
            h = down(h)
        h = self.middle(h)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            h = decoder(up(h) + skip)
        return x + self.ending(h)


def local_variance(residual: torch.Tensor, ksize: int = 3) -> torch.Tensor:
    """(N,1,H,W) -> (N,1,H,W): unbiased variance of every ksize x ksize window (reflect pad)."""
    pad = (ksize - 1) // 2
    padded = F.pad(residual, [pad] * 4, mode="reflect")
    windows = padded.unfold(2, ksize, 1).unfold(3, ksize, 1)
    return windows.var(dim=(-1, -2), unbiased=True)


def negative_map(original: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 has_positive: torch.Tensor, ksize: int = 3, power: float = 0.75) -> torch.Tensor:
    """HGGT's negative weight map (N,1,H,W) from (N,3,H,W) images in [0,1]: local variance of
    |original - negative| (summed over RGB) to the power 3/4, set to zero where the positive's
    map is at least as large (only for samples that have a Positive). The per-patch vote
    weight of HGGT (votes / 3) is 1 here: the shards keep scores, not vote counts."""
    neg = local_variance((original - negative).abs().sum(1, keepdim=True), ksize) ** power
    pos = local_variance((original - positive).abs().sum(1, keepdim=True), ksize) ** power
    refined = torch.where(pos >= neg, torch.zeros_like(neg), neg)
    return torch.where(has_positive.view(-1, 1, 1, 1), refined, neg)


def hggt_negative_loss(output: torch.Tensor, batch: dict, generator: torch.Generator,
                       weight: float = 300.0, cap: bool = True) -> torch.Tensor:
    """-weight * L1(map*output, map*negative) summed over the samples that have a Negative
    (one random Negative each, HGGT) and divided by the batch size; zero when none has one.

    HGGT's term is unbounded below: pushed far enough, the output can leave the negative
    without limit, which small models trained briefly without HGGT's GAN and perceptual
    losses do (the loss diverges). With `cap` (default) each pixel's distance counts only up
    to the target's own distance from the negative: "be at least as far from the Negative as
    the Positive is". `cap=False` is HGGT's exact term."""
    mask = batch["negative_mask"]
    rows = torch.nonzero(mask.any(1)).flatten()
    if len(rows) == 0:
        return output.new_zeros(())
    choice = torch.stack([torch.nonzero(mask[r]).flatten()[
        torch.randint(int(mask[r].sum()), (), generator=generator)] for r in rows])
    negative = batch["negatives"][rows, choice]
    weights = negative_map(batch["original"][rows], batch["gt"][rows], negative,
                           batch["target_index"][rows] > 0)
    distance = (weights * (output[rows] - negative)).abs()
    if cap:
        distance = torch.minimum(distance, (weights * (batch["gt"][rows] - negative)).abs())
    return -weight * distance.mean(dim=(1, 2, 3)).sum() / len(output)


def train(shards: Path, out: Path, *, task: str = "refine", steps: int = 300, batch: int = 8,
          crop: int = 48, lr: float = 1e-3, width: int = 16, neg_weight: float = 300.0,
          workers: int = 0, seed: int = 0, cap: bool = True, log_every: int = 10,
          device: str = "cpu", target: str | None = None) -> list[dict]:
    """Train `task` ("refine" or "sr") for `steps` steps on `device` ("cpu", "cuda",
    "auto") towards `target` (a ShardDataset target; default: see the module doc);
    returns the curve rows."""
    torch.manual_seed(seed)
    sr, device = task == "sr", resolve_device(device)
    if target is None:
        names = ShardSet(shards).candidate_names
        target = "fused" if not sr and "fused" in names else "hggt"
    data = ShardDataset(shards, crop=crop, target=target, original=True, negatives=sr,
                        indices=True, dtype="uint8")
    net: nn.Module = SmallSR(width=2 * width, scale=data.scale) if sr else RefinerUNet(width)
    net = net.to(device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 10)     # linear warm-up, then cosine decay
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda i: min(
        (i + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))))
    sampler = ShardBatchSampler(data, batch, workers, seed=seed, drop_last=True)
    if len(sampler) == 0:
        raise ValueError(f"{shards}: fewer samples ({len(data)}) than one batch ({batch})")
    loader = DataLoader(data, batch_sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0)
    generator = torch.Generator().manual_seed(seed)     # CPU draws, same on any device
    held_out = to_float(fixed_batch(data, batch, seed), device)

    def evaluate() -> float:
        """L1 on a fixed batch (fixed crops; c = 0.5 for the refiner), no gradient."""
        net.eval()
        with torch.no_grad():
            if sr:
                value = F.l1_loss(net(held_out["lq"]), held_out["gt"]).item()
            else:
                keep = held_out["target_index"] > 0
                original, enhanced = held_out["original"][keep], held_out["gt"][keep]
                c = torch.full((len(original),), 0.5, device=device)
                target = original + 0.5 * (enhanced - original)
                value = F.l1_loss(net(original, c), target).item()
        net.train()
        return value

    out.mkdir(parents=True, exist_ok=True)
    rows, step, epoch, start = [], 0, 0, time.time()
    val = evaluate()
    while step < steps:
        sampler.set_epoch(epoch)
        for b in loader:
            b = to_float(b, device)
            if sr:
                output = net(b["lq"])
                l1 = F.l1_loss(output, b["gt"])
                negative = hggt_negative_loss(output, b, generator, neg_weight, cap)
                loss, row = l1 + negative, {"l1": l1.item(), "negative": negative.item()}
            else:
                keep = b["target_index"] > 0          # samples with a Positive target
                if not keep.any():
                    continue
                original, enhanced = b["original"][keep], b["gt"][keep]
                c = torch.rand(len(original), generator=generator).to(device)
                target = original + c.view(-1, 1, 1, 1) * (enhanced - original)
                l1 = F.l1_loss(net(original, c), target)
                loss, row = l1, {"l1": l1.item()}
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step}: loss is {loss.item()}")
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            step += 1
            if step % log_every == 0 or step == steps:
                val = evaluate()
                print(f"step {step:5d}  " + "  ".join(f"{k} {v:.5f}" for k, v in row.items())
                      + f"  held-out l1 {val:.5f}  ({time.time() - start:.0f} s)", flush=True)
            rows.append({"step": step, "loss": loss.item(), **row, "held_out_l1": val})
            if step == steps:
                break
        epoch += 1
    with open(out / "curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    torch.save(net.state_dict(), out / f"{task}.pt")
    return rows


def fixed_batch(data: ShardDataset, size: int, seed: int) -> dict[str, torch.Tensor]:
    """`size` samples spread over the set, with crops fixed by `seed` (a fixed check of the
    fit, free of the batch-to-batch noise of the training loss)."""
    state = torch.get_rng_state()
    torch.manual_seed(seed + 1)
    picks = torch.linspace(0, len(data) - 1, size).long().tolist()
    batch = torch.utils.data.default_collate([data[i] for i in picks])
    torch.set_rng_state(state)
    return batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shards", type=Path, help="shard folder (holding manifest.json)")
    p.add_argument("out", type=Path)
    p.add_argument("--task", choices=["refine", "sr"], default="refine")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--neg-weight", type=float, default=300.0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--target", help="hggt, original or a candidate name (default: fused for "
                   "refine when present, else hggt)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--uncapped", action="store_true",
                   help="HGGT's exact (unbounded) negative loss instead of the capped one")
    args = p.parse_args()
    rows = train(args.shards, args.out, task=args.task, steps=args.steps, batch=args.batch,
                 crop=args.crop, lr=args.lr, width=args.width, neg_weight=args.neg_weight,
                 workers=args.workers, seed=args.seed, cap=not args.uncapped,
                 log_every=args.log_every, device=args.device, target=args.target)
    print(f"held-out L1: {rows[0]['held_out_l1']:.5f} at the start -> "
          f"{rows[-1]['held_out_l1']:.5f} after {len(rows)} steps  ({args.out / 'curve.csv'})")


if __name__ == "__main__":
    main()
