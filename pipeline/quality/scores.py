"""The score table ScorePatches writes: votes, labels and scores of every selected patch, as
scores.npz in its stage folder (plain arrays, no pickles)."""

from __future__ import annotations

import io
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from pipeline.store import durable

SCORES_NPZ = "scores.npz"


@dataclass(frozen=True)
class ScoreTable:
    """ScorePatches' output over the SelectPatches order (N patches, K candidates, M metrics):
    keep bool (N,), labels int8 (N,K), vote_counts uint8 (N,K,3) (voters saying -1, 0, +1),
    scores float32 (N,K+1,M) (row 0 the original), votes int8 (N,K,M), candidate_names (K,),
    metric_names (M,), lower_better bool (M,), modes (M,) "NR" / "FR" / "pairwise", and the
    vote margins used, float64 (K,M): each candidate's per metric, in the metric's units, for
    a Positive vote (`margins`) and for a Negative one (`negative_margins`; the same but for
    the neighbours annotator's heads)."""

    keep: np.ndarray
    labels: np.ndarray
    vote_counts: np.ndarray
    scores: np.ndarray
    votes: np.ndarray
    candidate_names: list[str]
    metric_names: list[str]
    lower_better: list[bool]
    modes: list[str]
    margins: np.ndarray
    negative_margins: np.ndarray


_NAME_LISTS = ("candidate_names", "metric_names", "modes")


def save(folder: Path, table: ScoreTable) -> None:
    """Write a ScoreTable as folder/scores.npz, durably."""
    arrays = {f.name: np.asarray(getattr(table, f.name), dtype=str if f.name in _NAME_LISTS
                                 else None) for f in fields(ScoreTable)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    durable.write_bytes(Path(folder) / SCORES_NPZ, buffer.getvalue())


def has_scores(folder: Path) -> bool:
    """Whether `folder` holds a score table."""
    return (Path(folder) / SCORES_NPZ).is_file()


def concatenate(tables: list[ScoreTable]) -> ScoreTable:
    """The patches of several tables of the same annotators and candidates (the chunks of a
    build) as one table, in order. ValueError when their names or margins differ."""
    first = tables[0]
    for table in tables[1:]:
        if any(getattr(table, n) != getattr(first, n) for n in (*_NAME_LISTS, "lower_better")) \
                or not all(np.array_equal(getattr(table, n), getattr(first, n), equal_nan=True)
                           for n in ("margins", "negative_margins")):
            raise ValueError("score tables of other annotators, candidates or margins cannot "
                             "be concatenated")
    stacked = {n: np.concatenate([getattr(t, n) for t in tables])
               for n in ("keep", "labels", "vote_counts", "scores", "votes")}
    return replace(first, **stacked)


def load(folder: Path) -> ScoreTable:
    """Read what `save` wrote in `folder`; ValueError naming the file when a field is missing."""
    path = Path(folder) / SCORES_NPZ
    with np.load(path, allow_pickle=False) as z:
        missing = [f.name for f in fields(ScoreTable) if f.name not in z.files]
        if missing:
            raise ValueError(f"{path}: not a gtforge score table (missing {', '.join(missing)})")
        values = {f.name: z[f.name] for f in fields(ScoreTable)}
    for name in _NAME_LISTS:
        values[name] = [str(v) for v in values[name]]
    values["lower_better"] = [bool(v) for v in values["lower_better"]]
    for name in ("margins", "negative_margins"):
        values[name] = np.asarray(values[name], np.float64)
    return ScoreTable(**values)
