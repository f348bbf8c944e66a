"""gtforge's second learned annotator: whether a candidate is closer to the clean image than its
original, read off its nearest neighbours among the judge's level-up pairs, in a space of five
image statistics.

The judge (pipeline.quality.judge) answers "how much closer to the clean image is b than a?"
end to end, from pixels. This annotator answers it from what decides it on good photos: what
the original suffers from and what the candidate did about it. Per pair (a = original,
b = candidate), on the luma (`statistics`):

1. log noise sigma of a (Immerkaer's estimator, grey levels);
2. log mean gradient magnitude of a (how much detail there is);
3. log(Laplacian variance / squared mean gradient) of a (how much of it is at the finest
   scale: high when a is sharp or noisy, low when it is blurred);
4. log rms(b - a) - log sigma(a): how far the candidate moved, against a's noise;
5. log(Laplacian variance of b / of a): sharpened (> 0) or smoothed (< 0).

TrainJudge keeps, for every generator, these statistics and the three heads' true gains
(pipeline.quality.judge.closeness, dB) of its outputs for the pool's training inputs
(`GainTable`). A candidate's score per head is the *net share* of its `k` nearest pairs of its
own generator (Euclidean, statistics standardised over the table) that came out closer to
their base: the share that gained more than FLOOR_DB minus the share that lost more, in
[-1, 1]. A share, not the neighbours' mean gain: the mean is led by the few pairs with large
losses (pristine inputs, where any change costs many dB), the share by what usually happens.
A candidate no generator made (the fused GT) has no pairs of its kind and is not judged
(NaN): read off every generator's pairs it was labelled Positive where it was truly within
0.2 dB of its GT (docs/QUALITY.md). Margins are calibrated on held-out pairs, one per sign
(`margins`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.image.patches import luma
from pipeline.quality.judge import HEADS, gradient_magnitude, one_sided_margin
from pipeline.quality.lr_stats import noise_sigma, sharpness

# A neighbour counts as better (worse) when it gained (lost) more than this, in dB; also the
# calibration's floor.
FLOOR_DB = 0.1


def statistics(original: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """The five statistics of a pair (module docstring), uint8 RGB HWC each: float64 (5,)."""
    a = luma(original)
    sigma, grad = noise_sigma(original), float(gradient_magnitude(a)[1:-1, 1:-1].mean())
    lap_a, lap_b = sharpness(original), sharpness(candidate)
    moved = float(np.sqrt(np.mean((luma(candidate) - a) ** 2)))
    return np.array([np.log(sigma + 0.1), np.log(grad + 0.1),
                     np.log((lap_a + 1) / (grad * grad + 1)),
                     np.log(moved + 0.1) - np.log(sigma + 0.1), np.log((lap_b + 1) / (lap_a + 1))])


@dataclass(frozen=True)
class GainTable:
    """Per generator name: statistics (n,5) of its (input, output) pairs and their gains
    (n, len(HEADS)) in dB; `k` neighbours are averaged; `centre` and `scale` (5,) standardise
    the statistics."""

    statistics: dict[str, np.ndarray]
    gains: dict[str, np.ndarray]
    k: int
    centre: np.ndarray
    scale: np.ndarray

    def predict(self, name: str, stats: np.ndarray) -> np.ndarray:
        """Per head, the net share of the `k` nearest pairs of generator `name` to pairs with
        statistics (m,5) that gained more than FLOOR_DB, minus the share that lost more:
        float64 (m, len(HEADS)) in [-1, 1]."""
        known = (self.statistics[name] - self.centre) / self.scale
        asked = (np.atleast_2d(stats) - self.centre) / self.scale
        out = np.empty((len(asked), len(HEADS)))
        k, step = min(self.k, len(known)), max(1, 2 ** 22 // len(known))  # 32 MB of distances
        norms = (known * known).sum(axis=1)
        for s in range(0, len(asked), step):
            d = norms[None] - 2 * asked[s:s + step] @ known.T  # + |asked|^2, the same per row
            gains = self.gains[name][np.argpartition(d, k - 1, axis=1)[:, :k]]
            out[s:s + step] = (gains > FLOOR_DB).mean(axis=1) - (gains < -FLOOR_DB).mean(axis=1)
        return out

    def to_bytes(self) -> bytes:
        """The table as an .npz (plain arrays; `from_bytes` reads it)."""
        names = list(self.statistics)
        arrays = {"names": np.array(names), "k": np.array(self.k), "centre": self.centre,
                  "scale": self.scale}
        for i, name in enumerate(names):
            arrays[f"statistics_{i}"] = self.statistics[name]
            arrays[f"gains_{i}"] = self.gains[name]
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> GainTable:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            names = [str(n) for n in z["names"]]
            return cls({n: z[f"statistics_{i}"] for i, n in enumerate(names)},
                       {n: z[f"gains_{i}"] for i, n in enumerate(names)}, int(z["k"]),
                       z["centre"], z["scale"])


def pair_rows(inputs: np.ndarray, outputs: np.ndarray,
              gains: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Statistics (n,5) of pairs (inputs[i], outputs[i]), uint8 (n,S,S,3) each, beside their
    known gains (n,3) dB."""
    stats = [statistics(a, b) for a, b in zip(inputs, outputs, strict=True)]
    return np.array(stats).reshape(-1, 5), np.asarray(gains).reshape(-1, len(HEADS))


def fit(rows: dict[str, tuple[np.ndarray, np.ndarray]], k: int) -> GainTable:
    """A GainTable of {generator: (statistics, gains)} (from `pair_rows`), standardised over
    the pairs of every generator together (no generator: nothing to judge with)."""
    every = np.concatenate([s for s, _ in rows.values()]) if rows else np.zeros((1, 5))
    return GainTable({n: s for n, (s, _) in rows.items()}, {n: g for n, (_, g) in rows.items()},
                     k, every.mean(axis=0), every.std(axis=0) + 1e-6)


def margins(predicted: np.ndarray, gain: np.ndarray,
            precision: float) -> dict[str, dict[str, float]]:
    """Per head, the smallest net share (at least FLOOR_DB's 0.1) above which held-out pairs
    (`predict`ed net shares, true gains in dB, (n,3) each) really are better by more than
    FLOOR_DB at least `precision` of the time ("positive"), and likewise worse ("negative"):
    one per sign, since for some generators a change is far more often called safely worse
    than better (or the other way). A sign that never gets there gets the largest share."""
    out: dict[str, dict[str, float]] = {"positive": {}, "negative": {}}
    for h, head in enumerate(HEADS):
        for sign, key in ((1.0, "positive"), (-1.0, "negative")):
            m = one_sided_margin(sign * predicted[:, h], sign * gain[:, h], precision, FLOOR_DB)
            out[key][head] = round(max(FLOOR_DB, m), 4)
    return out


def judged(table: GainTable, names: Sequence[str], originals: np.ndarray,
           candidates: np.ndarray) -> np.ndarray:
    """The net share (`GainTable.predict`) per head of every candidate over its original:
    originals uint8 (N,H,W,3), candidates (N,K,H,W,3), `names` (K,) the candidates'
    generators -> float32 (N,K,3) in [-1, 1]; NaN for a candidate of no generator in the
    table. A candidate identical to its original scores 0."""
    n, k = candidates.shape[:2]
    out = np.full((n, k, len(HEADS)), np.nan, np.float32)
    for j, name in enumerate(names):
        if name in table.statistics:
            stats = np.array([statistics(o, c) for o, c in zip(originals, candidates[:, j],
                                                                 strict=True)])
            unchanged = (candidates[:, j] == originals).all(axis=(1, 2, 3))
            out[:, j] = np.where(unchanged[:, None], 0, table.predict(name, stats.reshape(n, 5)))
    return out
