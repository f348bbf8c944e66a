"""TrainingStage: the base of the five training stages. Each builds a pipeline.train training
(model, optimiser and schedule with step / state_dict / load_state_dict), writes a `step(i)`
that draws batch i and runs the training's step on it, and calls `train`, which runs
pipeline.train.loop.train_loop with checkpoints and resume, saves the model and keeps the curve.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import luigi

from pipeline.image.ingest import HRImage, read_images
from tasks.base import Stage
from tasks.config import gtforge
from tasks.corpus import listing, no_usable_photo, training_chunks, with_sources

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.data import Dataset

    from pipeline.train.feed import ArrayStore, Feed
    from pipeline.train.loop import Training

ARRAYS = "arrays"


def training_inputs(stages: Callable[[tuple[str, ...]], dict[str, Stage]]) -> dict[str, Stage]:
    """requires() of a training: `stages(chunk)` ({role: stage}) for every chunk of the training
    set (tasks.corpus.training_chunks), as "<role>:<chunk number>"."""
    return {f"{role}:{i}": stage for i, chunk in enumerate(training_chunks())
            for role, stage in stages(chunk).items()}


class TrainingStage(Stage):
    """A stage that trains a network: resumable (a killed run goes on from its last
    checkpoint in the partial folder) and heavy. Subclasses have a `ckpt_every` parameter."""

    resumable = True
    heavy = True
    # DataLoader worker processes that make the batches (0: the training's own process).
    # Speed, not results: every batch depends on its step alone (pipeline.train.feed).
    loader_workers = luigi.OptionalIntParameter(default=None, significant=False)

    @cached_property
    def device(self) -> torch.device:
        """The torch device of the [gtforge] device setting."""
        from pipeline.train.device import resolve_device

        return resolve_device(gtforge().device)

    def training_photos(self, *roles: str) -> list[tuple[HRImage, dict[str, Path]]]:
        """(photo, {role: stage folder}) of every accepted training photo, chunk by chunk
        (training_inputs); the first role's stage lists the photos (an IngestHR).
        RuntimeError when there are none."""
        inputs, photos = self.input_stages(), []
        chunks = sorted({int(name.rsplit(":", 1)[1]) for name in inputs if ":" in name})
        for i in chunks:
            dirs = {role: inputs[f"{role}:{i}"].out_dir for role in roles}
            photos += [(img, dirs) for img in read_images(dirs[roles[0]])]
        if not photos:
            raise no_usable_photo(listing().rejects + [
                r for i in chunks for r in with_sources(inputs[f"{roles[0]}:{i}"].rejects())])
        return photos

    def array_store(self, out: Path,
                    images: Mapping[str, Callable[[], np.ndarray]]) -> ArrayStore:
        """The training images as memory-mapped copies in out/arrays (pipeline.train.feed):
        `images` maps a name to a loader of uint8 HWC; each is written once (a resumed run
        keeps them) and removed when the training is published."""
        from pipeline.train.feed import ArrayStore

        store = ArrayStore(out / ARRAYS)
        for name, load in self.progress(images.items(), len(images),
                                        f"{self.get_task_family()}: training images"):
            store.put(name, load)
        return store

    def feed(self, batches: Dataset, total: int) -> Feed:
        """Batches 0..total-1 of `batches`, made by `loader_workers` worker processes (at
        most one per core)."""
        from pipeline.train.feed import Feed

        return Feed(batches, total, min(self.resolved("loader_workers"), os.cpu_count() or 1))

    def train(self, out: Path, training: Training, step: Callable[[int], dict[str, float]],
              total: int, save: Callable[[], None], title: str | None, *,
              ckpt_every: int | None = None, desc: str | None = None) -> list[dict[str, float]]:
        """Run steps 0..total-1 of `step` (pipeline.train.loop.train_loop on this stage's
        device, progress to luigi under `desc`, default the stage's name): `training`'s state
        is checkpointed in out/checkpoints every `ckpt_every` steps (default: the ckpt_every
        setting) and a rerun resumes from the last one; torch is seeded per step from a seed
        derived from this stage's key. Then `save()` writes the trained
        model (while the last checkpoint is still there) and finish_training keeps the curve
        as out/curve.csv, plotted as out/curve.png under `title` unless None. Returns the
        curve rows, one per step."""
        from pipeline.train.loop import TrainState, finish_training, train_loop

        rows = train_loop(step, TrainState.of(training), total, out / "checkpoints",
                          self.resolved("ckpt_every") if ckpt_every is None else ckpt_every,
                          self.seed_for("steps"),
                          desc=desc or self.get_task_family(), on_progress=self.show_progress,
                          device=self.device)
        save()
        shutil.rmtree(out / ARRAYS, ignore_errors=True)
        finish_training(out, title)
        return rows
