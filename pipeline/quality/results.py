"""The results of measuring a build against clean references, as JSON in the stage folder:
truth.json (MeasureTruth: gains and labels against the oracle) and evaluation.json
(EvaluateTargets: a small SR network trained per target)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pipeline.store import durable

TRUTH_JSON = "truth.json"
EVALUATION_JSON = "evaluation.json"


def save_truth(folder: Path, result: Mapping) -> None:
    durable.write_json(Path(folder) / TRUTH_JSON, result)


def load_truth(folder: Path) -> dict:
    """{"tau_db", "candidates": {name: summary}, "overall": {...}} of a MeasureTruth folder."""
    return json.loads((Path(folder) / TRUTH_JSON).read_text())


def save_evaluation(folder: Path, report: Mapping) -> None:
    durable.write_json(Path(folder) / EVALUATION_JSON, report)


def load_evaluation(folder: Path) -> dict:
    """{"folds", "training_samples" (per fold), "heldout", "heldout_draws", "loss", "runs",
    "comparison", "photo_gains"} of an EvaluateTargets folder."""
    return json.loads((Path(folder) / EVALUATION_JSON).read_text())
