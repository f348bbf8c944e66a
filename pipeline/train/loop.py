"""The loop every training stage shares: per-step seeding, checkpoints, resume, curves.

A stage supplies `step(step_index) -> {loss_name: float}` and a `TrainState` (how to get
and set everything that must survive a kill: model, optimiser and schedule state dicts).
Each step seeds torch from (seed, step), and data sampling should draw from
`pipeline.store.seeding.rng(seed, step)`, so a resumed run repeats exactly what an uninterrupted
one would have done.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.ops.progress import Reporter, track
from pipeline.store import durable
from pipeline.store.seeding import derive_seed

CURVE_CSV = "curve.csv"


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


@dataclass
class TrainState:
    get: Callable[[], dict[str, Any]]
    set: Callable[[dict[str, Any]], None]

    @classmethod
    def of(cls, **parts: Any) -> TrainState:
        """The state of objects with state_dict / load_state_dict (a model, an optimiser, a
        schedule), saved under their keyword names."""
        def load(state: dict[str, Any]) -> None:
            for name, part in parts.items():
                part.load_state_dict(state[name])

        return cls(get=lambda: {name: part.state_dict() for name, part in parts.items()},
                   set=load)


def finish_training(out: Path, title: str | None) -> None:
    """After `train_loop` into out/checkpoints: keep its curve as out/curve.csv (plotted as
    out/curve.png under `title`, unless None) and remove the checkpoints."""
    shutil.move(out / "checkpoints" / CURVE_CSV, out / CURVE_CSV)
    shutil.rmtree(out / "checkpoints")
    if title is not None:
        plot_curve(out / CURVE_CSV, out / "curve.png", title)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save, written durably (pipeline.store.durable): a kill or a power cut never leaves
    half a checkpoint under its name."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    durable.write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=device, weights_only=True)


def checkpoint_path(ckpt_dir: Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step-{step:08d}.pt"


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = sorted(Path(ckpt_dir).glob("step-*.pt"))
    return found[-1] if found else None


def read_curve(csv_path: Path) -> list[dict[str, float]]:
    if not Path(csv_path).is_file():
        return []
    with open(csv_path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]



def plot_curve(csv_path: Path, png_path: Path, title: str) -> None:
    """Draw every loss column of a curve CSV against the step, one panel per loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_curve(csv_path)
    names = [k for k in (rows[0] if rows else {}) if k != "step"]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.2 * max(len(names), 1), 2.6),
                             squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, name in zip(axes[0], names, strict=False):
        ax.plot(steps, [r[name] for r in rows], lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)


def train_loop(step: Callable[[int], dict[str, float]], state: TrainState, total_steps: int,
               ckpt_dir: Path, ckpt_every: int, seed: int, desc: str = "train",
               report: Reporter | None = None, device: torch.device | str = "cpu",
               keep: int = 2) -> list[dict[str, float]]:
    """Run steps [resume point, total_steps), checkpointing every `ckpt_every` steps and at
    the end. Returns the loss curve (one row per step, including steps before a resume).

    Raises NonFiniteLoss naming the step and loss if any loss is NaN or Inf.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    start, last_good = 0, latest_checkpoint(ckpt_dir)
    if last_good is not None:
        payload = load_checkpoint(last_good, device)
        state.set(payload["state"])
        start = int(payload["step"])
    curve_csv = ckpt_dir / CURVE_CSV
    rows = [r for r in read_curve(curve_csv) if r["step"] < start]
    for i in track(range(start, total_steps), total=total_steps - start, desc=desc, report=report):
        torch.manual_seed(derive_seed(seed, i))
        losses = step(i)
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            durable.write_csv(curve_csv, rows)
            raise NonFiniteLoss(f"{desc}: non-finite loss at step {i}: {bad}; last good "
                                f"checkpoint: {last_good or 'none (no checkpoint yet)'}")
        rows.append({"step": float(i), **{k: float(v) for k, v in losses.items()}})
        if (i + 1) % ckpt_every == 0 or i + 1 == total_steps:
            last_good = checkpoint_path(ckpt_dir, i + 1)
            save_checkpoint(last_good, {"step": i + 1, "state": state.get()})
            durable.write_csv(curve_csv, rows)
            for old in sorted(ckpt_dir.glob("step-*.pt"))[:-keep]:
                old.unlink()
    return rows
