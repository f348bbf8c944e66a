"""ScorePatches: annotators (the learned judge, pyiqa metrics) label every candidate of every
patch Positive / Similar / Negative."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import luigi
import numpy as np

from pipeline.quality import annotate
from pipeline.quality.judge import judge
from pipeline.store import durable
from pipeline.store.imageio import image_path, read_rgb
from pipeline.train.device import resolve_device
from tasks.base import Stage
from tasks.candidates import candidate_stages
from tasks.config import gtforge
from tasks.ingest import IngestHR
from tasks.select_patches import SelectPatches
from tasks.train_judge import TrainJudge

SCORES = "scores.npz"
DIFFERENCE = "difference.npz"
LABEL_STATS = "label_stats.json"
ROLES = ("patches", "hr")


class ScorePatches(Stage):
    """scores.npz: a pipeline.quality.annotate.ScoreTable over the SelectPatches order (`table()`
    reads it); difference.npz: difference (N,K) float32 and the measure used;
    label_stats.json: label counts (pipeline.quality.annotate.label_stats) and filters. Annotators:
    the `metrics` (pyiqa names, and "judge" for the three heads of TrainJudge)."""

    version = 2
    metrics = luigi.OptionalListParameter(default=None)
    margins = luigi.OptionalDictParameter(default=None)
    fr_policy = luigi.OptionalChoiceParameter(choices=list(annotate.FR_POLICIES), default=None)
    difference_measure = luigi.OptionalChoiceParameter(
        choices=list(annotate.DIFFERENCE_MEASURES), default=None)
    difference_threshold = luigi.OptionalFloatParameter(default=None)
    drop_all_similar = luigi.OptionalBoolParameter(default=None)
    chunk = luigi.IntParameter(default=64, significant=False)

    def requires(self):
        deps = {"patches": SelectPatches(), "hr": IngestHR(), **candidate_stages()}
        if annotate.JUDGE in self.settings["metrics"]:
            deps[annotate.JUDGE] = TrainJudge()
        return deps

    def table(self) -> annotate.ScoreTable:
        """The scores and labels this stage wrote."""
        return annotate.load_scores(self.out_dir / SCORES)

    @property
    def candidate_dirs(self) -> dict[str, Path]:
        return {name: stage.out_dir for name, stage in self.input_stages().items()
                if name not in (*ROLES, annotate.JUDGE)}

    def _margins(self, names: list[str]) -> list[float]:
        """Each annotator's margin: `margins`, else (judge heads) TrainJudge's calibration."""
        margins = dict(self.settings["margins"])
        if annotate.JUDGE in self.input_stages():
            calibrated = self.input_stages()[annotate.JUDGE].margins()
            margins = {**{f"{annotate.JUDGE}_{h}": v for h, v in calibrated.items()}, **margins}
        missing = [m for m in names if m not in margins]
        if missing:
            raise ValueError(f"[ScorePatches] margins has no value for {missing} "
                             f"(metrics = {self.settings['metrics']}, margins = {margins})")
        return [float(margins[m]) for m in names]

    def _scorer(self, device):
        """scores(original (n,H,W,3), candidates (n,K,H,W,3)) -> (n,K+1,M), every annotator."""
        metrics = [str(m) for m in self.settings["metrics"]]
        model = (self.input_stages()[annotate.JUDGE].load_model(device)
                 if annotate.JUDGE in metrics else None)

        def scores(original: np.ndarray, candidates: np.ndarray) -> np.ndarray:
            parts = [annotate.pairwise_scores(judge(model, original, candidates, device))
                     if m == annotate.JUDGE else
                     annotate.score_patches(original, candidates, [m], device) for m in metrics]
            return np.concatenate(parts, axis=2)

        return scores

    def _crops(self, patches: dict):
        """(patch indices, originals (n,H,W,3), candidates (n,K,H,W,3)) in chunks, image by
        image."""
        size, pending = patches["size"], []
        by_image: dict[str, list[int]] = defaultdict(list)
        for i, image_id in enumerate(patches["image_id"]):
            by_image[str(image_id)].append(i)
        for image_id in self.progress(list(by_image), len(by_image), "ScorePatches"):
            stack = self._versions(image_id)
            for i in by_image[image_id]:
                x, y = int(patches["x"][i]), int(patches["y"][i])
                crop = stack[:, y:y + size, x:x + size]
                if crop.shape[1:3] != (size, size):
                    raise RuntimeError(f"patch {i} of {image_id} at x={x}, y={y}, size {size} "
                                       f"passes the border of the {stack.shape[2]}x"
                                       f"{stack.shape[1]} HR image")
                pending.append((i, crop))
            if len(pending) >= self.chunk or image_id == next(reversed(by_image)):
                yield (np.array([p[0] for p in pending]), np.stack([p[1][0] for p in pending]),
                       np.stack([p[1][1:] for p in pending]))
                pending = []

    def _versions(self, image_id: str) -> np.ndarray:
        """The original and every candidate of one image: uint8 (1+K,H,W,3)."""
        original = read_rgb(image_path(self.input_dir("hr"), image_id))
        versions = [original]
        for name, folder in self.candidate_dirs.items():
            path = image_path(folder, image_id)
            rgb = read_rgb(path)
            if rgb.shape != original.shape:
                raise RuntimeError(f"{path}: candidate {name} is {rgb.shape[1]}x{rgb.shape[0]},"
                                   f" the HR image is {original.shape[1]}x{original.shape[0]}")
            versions.append(rgb)
        return np.stack(versions)

    def build(self, out: Path) -> dict:
        s = self.settings
        names = annotate.annotator_names(s["metrics"])
        infos = [annotate.annotator_info(m) for m in names]
        margins = self._margins(names)
        device = resolve_device(gtforge().device)
        patches = self.input_stages()["patches"].patches()
        n, k = len(patches["x"]), len(self.candidate_dirs)
        scores = np.full((n, k + 1, len(names)), np.nan, np.float32)
        differences = np.zeros((n, k), np.float32)
        score = self._scorer(device)
        for idx, original, candidates in self._crops(patches):
            scores[idx] = score(original, candidates)
            differences[idx] = annotate.difference(original, candidates,
                                                   s["difference_measure"], device)
        table = self._label(scores, differences, infos, margins, names)
        annotate.save_scores(out / SCORES, table)
        np.savez(out / DIFFERENCE, difference=differences,
                 measure=np.array(s["difference_measure"]))
        stats = self._stats(table, differences, infos, margins)
        durable.write_json(out / LABEL_STATS, stats)
        return {"patches": n, "kept": int(table.keep.sum()), "candidates": table.candidate_names,
                "metrics": names, "difference_measure": s["difference_measure"],
                "labels": stats["all_candidates"]}

    def _label(self, scores: np.ndarray, differences: np.ndarray, infos: list, margins: list,
               names: list[str]) -> annotate.ScoreTable:
        s = self.settings
        full_reference = [info.full_reference for info in infos]
        votes = annotate.vote(scores, margins, [info.lower_better for info in infos],
                              full_reference)
        labels = annotate.label(votes, full_reference, s["fr_policy"])
        counts = annotate.vote_counts(votes[..., annotate.voters(full_reference, s["fr_policy"])])
        keep = annotate.difference_keep(differences, s["difference_threshold"])
        if s["drop_all_similar"]:
            keep &= annotate.informative(labels)
        return annotate.ScoreTable(
            keep=keep, labels=labels, vote_counts=counts, scores=scores, votes=votes,
            candidate_names=list(self.candidate_dirs), metric_names=names,
            lower_better=[info.lower_better for info in infos],
            modes=[info.mode for info in infos], margins=list(margins))

    def _stats(self, table: annotate.ScoreTable, differences: np.ndarray, infos: list,
               margins: list) -> dict:
        s, k = self.settings, len(table.candidate_names)
        stats = annotate.label_stats(table.labels, table.votes, table.keep,
                                     table.candidate_names, table.metric_names)
        stats["metrics"] = [{"name": info.name, "mode": info.mode,
                             "lower_better": info.lower_better, "score_range": info.score_range,
                             "margin": margin} for info, margin in zip(infos, margins, strict=True)]
        stats["fr_policy"] = s["fr_policy"]
        differs = annotate.difference_keep(differences, s["difference_threshold"])
        informative = annotate.informative(table.labels)
        stats["difference_filter"] = {
            "measure": s["difference_measure"], "threshold": s["difference_threshold"],
            "applied": k > 0, "dropped": int((~differs).sum())}
        all_similar, drop = int((differs & ~informative).sum()), bool(s["drop_all_similar"])
        stats["drop_all_similar"] = {"enabled": drop, "applied": drop and k > 0,
                                     "all_similar": all_similar,
                                     "dropped": all_similar if drop else 0}
        nan = np.isnan(table.scores).sum(axis=(0, 1))
        stats["nan_scores"] = {m: int(c) for m, c in zip(table.metric_names, nan, strict=True)}
        return stats
