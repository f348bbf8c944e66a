"""The loop every training stage shares: per-step seeding, checkpoints, resume, curves.

Every training has one shape, a `Training` (pipeline.train.<name>): it holds the model,
optimiser and schedule, `step(i, *batch)` runs update i on one batch, and `state_dict()` /
`load_state_dict()` hold everything that must survive a kill. A stage supplies
`step(step_index) -> {loss_name: float}` (draw the batch, call the training's step) and the
`TrainState` of its training (tasks.training.TrainingStage.train does both for the stages).
Each step seeds torch from (seed, step), and data sampling should draw from
`pipeline.store.seeding.rng(seed, step)`, so a resumed run repeats exactly what an uninterrupted
one would have done.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.ops.progress import ProgressCallback, track
from pipeline.store import durable
from pipeline.store.seeding import derive_seed
from pipeline.train.curve import CURVE_CSV, plot_curve, read_curve
from pipeline.train.precision import FP32, Precision


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


class Training:
    """The shape of every training: a model with its optimiser and schedule. A subclass has
    `step(i, *batch) -> {loss name: float}` (update i on one batch, as tensors on the model's
    device) and names in `parts()` the objects whose state_dict a checkpoint keeps; one that
    keeps more (running statistics) overrides `state_dict` / `load_state_dict`. Its forward
    passes run at `precision` (pipeline.train.precision; losses stay float32)."""

    precision: Precision = FP32

    def parts(self) -> dict[str, Any]:
        """The models, optimisers and schedules to checkpoint, by name."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: {name: part.state_dict()} over `parts()`."""
        return {name: part.state_dict() for name, part in self.parts().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()`: every part from its entry."""
        for name, part in self.parts().items():
            part.load_state_dict(state[name])


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor,
            clip: tuple[Iterable[torch.nn.Parameter], float] | None = None) -> None:
    """One gradient step on `loss`: zero the gradients, backpropagate, clip their norm when
    `clip` = (parameters, max norm) is given, and step the optimiser."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(*clip)
    optimizer.step()


@dataclass
class TrainState:
    """How train_loop gets (for a checkpoint) and sets (on resume) a training's state."""

    get: Callable[[], dict[str, Any]]
    set: Callable[[dict[str, Any]], None]

    @classmethod
    def of(cls, training: Training) -> TrainState:
        """The state of a training (anything with state_dict / load_state_dict)."""
        return cls(get=training.state_dict, set=training.load_state_dict)


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor detached and on the CPU, ready to save."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def parameter_count(model: torch.nn.Module) -> int:
    """How many numbers the model's parameters hold."""
    return sum(p.numel() for p in model.parameters())


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


def train_loop(step: Callable[[int], dict[str, float]], state: TrainState, total_steps: int,
               ckpt_dir: Path, ckpt_every: int, seed: int, desc: str = "train",
               on_progress: ProgressCallback | None = None, device: torch.device | str = "cpu",
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
    steps = range(start, total_steps)
    for i in track(steps, total=len(steps), desc=desc, on_progress=on_progress):
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
