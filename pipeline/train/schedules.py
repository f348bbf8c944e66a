"""Learning-rate schedules of the trainings: warm-up + cosine (the CFMG, the judge) and step
decay at milestones (the enhancers)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int,
                  total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from lr/warmup to lr over `warmup` steps, then a cosine decay to 0 at
    step `total`. Returns the scheduler; call its .step() once per optimiser step."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def learning_rate(base: float, step: int, milestones: Sequence[int], gamma: float = 0.5) -> float:
    """The learning rate at the 0-based `step`: `base` times `gamma` for every milestone at or
    before it."""
    return base * gamma ** sum(step >= m for m in milestones)
