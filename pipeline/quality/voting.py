"""Votes and labels: each annotator's vote from its scores and margin, HGGT's majority rule, the
difference filter and label statistics (numpy only; the scores come from pipeline.quality.annotate).

HGGT had three people label each enhanced patch against the original as Positive (+1),
Similar (0) or Negative (-1); the majority wins and a three-way split counts as Similar. Here each
configured pyiqa metric is one annotator (see docs/ANNOTATION.md):

- a no-reference (NR) metric scores the original and the candidate on their own; it votes +1 if
  the candidate is better by more than the metric's margin, -1 if worse by more than the margin,
  else 0 (the metric's direction, `lower_better`, is taken into account);
- a full-reference (FR) metric scores the candidate against the original, so it only measures how
  far the candidate moved (the original compared with itself scores best). It can never vote +1:
  it votes -1 when the distortion passes its margin, else 0. `fr_policy` says how that vote counts:
  "vote" (an annotator like the others), "veto" (does not vote; a -1 forces Negative) or "ignore"
  (scores stored, no say in the label).

Shapes: N patches, K candidates, M metrics; patches are uint8 RGB HWC.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POSITIVE, SIMILAR, NEGATIVE = 1, 0, -1
# In `metrics`, "judge" stands for the three heads of gtforge's learned judge
# (pipeline.quality.judge), "neighbours" for those of its neighbours annotator
# (pipeline.quality.neighbours); both come from TrainJudge.
JUDGE = "judge"
NEIGHBOURS = "neighbours"
LEARNED = (JUDGE, NEIGHBOURS)
LABEL_NAMES = {POSITIVE: "positive", SIMILAR: "similar", NEGATIVE: "negative"}
FR_POLICIES = ("vote", "veto", "ignore")
DIFFERENCE_MEASURES = ("mean_diff", "mad", "ssim")


def vote(scores: np.ndarray, margins: np.ndarray | Sequence[float],
         lower_better: Sequence[bool], full_reference: Sequence[bool],
         negative_margins: np.ndarray | Sequence[float] | None = None) -> np.ndarray:
    """Per-metric votes from raw scores (N,K+1,M) (index 0 = original): int8 (N,K,M) in {-1,0,+1}.

    The improvement of candidate k under metric m is (score_k - score_0), negated for
    lower-is-better metrics; it votes +1 above its margin, -1 below minus its negative margin
    (`negative_margins`, default `margins`), else 0. Margins are (M,), the same for every
    candidate, or (K,M), a row per candidate.
    FR metrics cannot vote +1 (clipped to 0). A NaN score (a metric failing on a patch, an
    annotator that does not judge a candidate) votes 0; `majority` can leave it out.
    """
    scores = np.asarray(scores, np.float64)
    margins = np.asarray(margins, np.float64)
    below = margins if negative_margins is None else np.asarray(negative_margins, np.float64)
    if below.shape != margins.shape:
        raise ValueError(f"negative margins {below.shape} vs margins {margins.shape}")
    sign = np.where(np.asarray(lower_better, bool), -1.0, 1.0)
    m = scores.shape[2] if scores.ndim == 3 else -1
    if margins.ndim == 2 and margins.shape[0] != scores.shape[1] - 1:
        raise ValueError(f"scores {scores.shape} vs margins for {margins.shape[0]} candidates")
    if m != margins.shape[-1] or margins.ndim > 2 or len(sign) != m:
        raise ValueError(f"scores {scores.shape} vs margins {margins.shape} / {len(sign)} "
                         "directions")
    if (margins < 0).any() or (below < 0).any():
        raise ValueError(f"margins must be >= 0, got {margins.tolist()} / {below.tolist()}")
    gain = (scores[:, 1:, :] - scores[:, :1, :]) * sign
    votes = np.where(gain > margins, POSITIVE, np.where(gain < -below, NEGATIVE, SIMILAR))
    fr = np.asarray(full_reference, bool)
    votes[..., fr] = np.minimum(votes[..., fr], SIMILAR)
    return votes.astype(np.int8)


def majority(votes: np.ndarray, judged: np.ndarray | None = None) -> np.ndarray:
    """The label of int8 votes along the last axis: the vote of more than half of the voters,
    else Similar. With HGGT's three annotators that is 2 of 3, and a three-way split is
    Similar; with four, a label needs 3 votes (2-1-1 is Similar); no voters -> Similar.
    `judged` (bool, votes' shape; default all) leaves out the annotators that gave no score
    (they abstain, and are not counted). Returns int8 of votes.shape[:-1]."""
    counts = vote_counts(votes, judged)
    top, voted = counts.max(-1), counts.sum(-1, dtype=np.int64)
    return np.where(2 * top > voted, counts.argmax(-1) - 1, SIMILAR).astype(np.int8)


def vote_counts(votes: np.ndarray, judged: np.ndarray | None = None) -> np.ndarray:
    """How many voters said -1, 0, +1 along the last axis of int8 votes, leaving out those
    not `judged` (see `majority`): uint8 (*votes.shape[:-1], 3), columns Negative, Similar,
    Positive."""
    votes = np.asarray(votes)
    judged = np.ones(votes.shape, bool) if judged is None else np.asarray(judged, bool)
    return np.stack([((votes == v) & judged).sum(-1) for v in (NEGATIVE, SIMILAR, POSITIVE)],
                    -1).astype(np.uint8)


def voters(full_reference: Sequence[bool], fr_policy: str = "vote") -> np.ndarray:
    """bool (M,): the metrics whose votes count in the majority under `fr_policy` (every one
    under "vote"; the non-FR ones under "veto" and "ignore")."""
    if fr_policy not in FR_POLICIES:
        raise ValueError(f"fr_policy must be one of {FR_POLICIES}, got {fr_policy!r}")
    fr = np.asarray(full_reference, bool)
    return np.ones_like(fr) if fr_policy == "vote" else ~fr


def label(votes: np.ndarray, full_reference: Sequence[bool], fr_policy: str = "vote",
          judged: np.ndarray | None = None) -> np.ndarray:
    """Final labels int8 (N,K) from votes (N,K,M): the majority of the `voters` that judged
    the candidate (`judged`, see `majority`); under "veto" a -1 of any FR metric makes the
    label Negative."""
    fr = np.asarray(full_reference, bool)
    who = voters(fr, fr_policy)
    labels = majority(votes[..., who], None if judged is None else np.asarray(judged)[..., who])
    if fr_policy == "veto" and fr.any():
        labels = np.where((votes[..., fr] == NEGATIVE).any(-1), NEGATIVE, labels).astype(np.int8)
    return labels


def difference_keep(differences: np.ndarray, threshold: float) -> np.ndarray:
    """bool (N,): a patch is kept if some candidate differs by more than `threshold`. With no
    candidates (K=0) there is nothing to compare and every patch is kept."""
    differences = np.asarray(differences)
    if differences.shape[1] == 0:
        return np.ones(len(differences), bool)
    return (differences > threshold).any(axis=1)


def informative(labels: np.ndarray) -> np.ndarray:
    """bool (N,): the patch has at least one Positive or Negative candidate (HGGT drops groups
    that are all Similar). With no candidates every patch counts as informative."""
    labels = np.asarray(labels)
    if labels.shape[1] == 0:
        return np.ones(len(labels), bool)
    return (labels != SIMILAR).any(axis=1)


def _counts(values: np.ndarray) -> dict[str, int]:
    return {name: int((values == v).sum()) for v, name in LABEL_NAMES.items()}


def label_stats(labels: np.ndarray, votes: np.ndarray, keep: np.ndarray,
                candidate_names: Sequence[str], metric_names: Sequence[str]) -> dict:
    """HGGT-style tables over the kept patches: Positive/Similar/Negative counts per candidate
    source and per metric, and how many patches have 0..K Positive candidates."""
    labels, votes, keep = np.asarray(labels), np.asarray(votes), np.asarray(keep, bool)
    kept_labels, kept_votes = labels[keep], votes[keep]
    k = labels.shape[1]
    positives = (kept_labels == POSITIVE).sum(axis=1)
    return {
        "patches": int(len(labels)),
        "kept": int(keep.sum()),
        "counted_over": "kept patches",
        "per_candidate": {name: _counts(kept_labels[:, i])
                          for i, name in enumerate(candidate_names)},
        "all_candidates": _counts(kept_labels),
        "positives_per_patch": {str(p): int((positives == p).sum()) for p in range(k + 1)},
        "votes_per_metric": {m: {name: _counts(kept_votes[:, i, j])
                                 for i, name in enumerate(candidate_names)}
                             for j, m in enumerate(metric_names)},
    }
