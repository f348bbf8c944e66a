"""ScorePatches: IQA metrics as annotators; Positive / Similar / Negative labels per candidate."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import luigi
import numpy as np

from pipeline import annotate, durable
from pipeline.device import resolve_device
from pipeline.imageio import image_path, read_rgb
from tasks.base import Stage
from tasks.candidates import candidate_stages
from tasks.config import gtforge
from tasks.ingest import IngestHR
from tasks.select_patches import SelectPatches

SCORES = "scores.npz"
DIFFERENCE = "difference.npz"
LABEL_STATS = "label_stats.json"
ROLES = ("patches", "hr")


class ScorePatches(Stage):
    """scores.npz: a pipeline.annotate.ScoreTable over the SelectPatches order (`table()`
    reads it); difference.npz: difference (N,K) float32 and the measure used;
    label_stats.json: label counts (pipeline.annotate.label_stats) and filters."""

    version = 1
    metrics = luigi.OptionalListParameter(default=None)
    margins = luigi.OptionalDictParameter(default=None)
    fr_policy = luigi.OptionalChoiceParameter(choices=list(annotate.FR_POLICIES), default=None)
    difference_measure = luigi.OptionalChoiceParameter(
        choices=list(annotate.DIFFERENCE_MEASURES), default=None)
    difference_threshold = luigi.OptionalFloatParameter(default=None)
    drop_all_similar = luigi.OptionalBoolParameter(default=None)
    chunk = luigi.IntParameter(default=64, significant=False)

    def requires(self):
        return {"patches": SelectPatches(), "hr": IngestHR(), **candidate_stages()}

    def table(self) -> annotate.ScoreTable:
        """The scores and labels this stage wrote."""
        return annotate.load_scores(self.out_dir / SCORES)

    @property
    def candidate_dirs(self) -> dict[str, Path]:
        return {name: stage.out_dir for name, stage in self.input_stages().items()
                if name not in ROLES}

    def _margins(self, metrics: list[str]) -> list[float]:
        margins = self.settings["margins"]
        missing = [m for m in metrics if m not in margins]
        if missing:
            raise ValueError(f"[ScorePatches] margins has no value for {missing} "
                             f"(metrics = {metrics}, margins = {margins})")
        return [float(margins[m]) for m in metrics]

    def build(self, out: Path) -> dict:
        from pipeline import iqa  # noqa: PLC0415 - metric_info imports pyiqa (seconds)

        s = self.settings
        metrics = [str(m) for m in s["metrics"]]
        margins = self._margins(metrics)
        infos = [iqa.metric_info(m) for m in metrics]
        device = resolve_device(gtforge().device)
        patches = self.input_stages()["patches"].patches()
        size, n = patches["size"], len(patches["x"])
        names = list(self.candidate_dirs)
        k = len(names)
        scores = np.full((n, k + 1, len(metrics)), np.nan, np.float32)
        differences = np.zeros((n, k), np.float32)

        by_image: dict[str, list[int]] = defaultdict(list)
        for i, image_id in enumerate(patches["image_id"]):
            by_image[str(image_id)].append(i)
        pending: list[tuple[int, np.ndarray, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            idx = np.array([p[0] for p in pending])
            original = np.stack([p[1] for p in pending])
            cands = np.stack([p[2] for p in pending])
            scores[idx] = annotate.score_patches(original, cands, metrics, device)
            differences[idx] = annotate.difference(original, cands, s["difference_measure"],
                                                   device)
            pending.clear()

        for image_id in self.progress(list(by_image), len(by_image), "ScorePatches"):
            original = read_rgb(image_path(self.input_dir("hr"), image_id))
            versions = []
            for name, folder in self.candidate_dirs.items():
                path = image_path(folder, image_id)
                rgb = read_rgb(path)
                if rgb.shape != original.shape:
                    raise RuntimeError(f"{path}: candidate {name} is {rgb.shape[1]}x"
                                       f"{rgb.shape[0]}, the HR image is {original.shape[1]}x"
                                       f"{original.shape[0]}")
                versions.append(rgb)
            stack = np.stack([original, *versions])
            for i in by_image[image_id]:
                x, y = int(patches["x"][i]), int(patches["y"][i])
                crop = stack[:, y:y + size, x:x + size]
                if crop.shape[1:3] != (size, size):
                    raise RuntimeError(f"patch {i} of {image_id} at x={x}, y={y}, size {size} "
                                       f"passes the border of the {original.shape[1]}x"
                                       f"{original.shape[0]} HR image")
                pending.append((i, crop[0], crop[1:]))
            if len(pending) >= self.chunk:
                flush()
        flush()

        full_reference = [info.full_reference for info in infos]
        votes = annotate.vote(scores, margins, [info.lower_better for info in infos],
                              full_reference)
        labels = annotate.label(votes, full_reference, s["fr_policy"])
        counts = annotate.vote_counts(votes[..., annotate.voters(full_reference, s["fr_policy"])])
        differs = annotate.difference_keep(differences, s["difference_threshold"])
        informative = annotate.informative(labels)
        keep = differs & (informative if s["drop_all_similar"] else True)

        annotate.save_scores(out / SCORES, annotate.ScoreTable(
            keep=keep, labels=labels, vote_counts=counts, scores=scores, votes=votes,
            candidate_names=names, metric_names=metrics,
            lower_better=[info.lower_better for info in infos],
            modes=[info.mode for info in infos]))
        np.savez(out / DIFFERENCE, difference=differences,
                 measure=np.array(s["difference_measure"]))
        stats = annotate.label_stats(labels, votes, keep, names, metrics)
        stats["metrics"] = [{"name": info.name, "mode": info.mode,
                             "lower_better": info.lower_better, "score_range": info.score_range,
                             "margin": margin} for info, margin in zip(infos, margins, strict=True)]
        stats["fr_policy"] = s["fr_policy"]
        stats["difference_filter"] = {
            "measure": s["difference_measure"], "threshold": s["difference_threshold"],
            "applied": k > 0, "dropped": int((~differs).sum())}
        all_similar, drop = int((differs & ~informative).sum()), bool(s["drop_all_similar"])
        stats["drop_all_similar"] = {"enabled": drop, "applied": drop and k > 0,
                                     "all_similar": all_similar,
                                     "dropped": all_similar if drop else 0}
        nan = np.isnan(scores).sum(axis=(0, 1))
        stats["nan_scores"] = {m: int(c) for m, c in zip(metrics, nan, strict=True)}
        durable.write_json(out / LABEL_STATS, stats)
        return {"patches": n, "kept": int(keep.sum()), "candidates": names, "metrics": metrics,
                "difference_measure": s["difference_measure"],
                "labels": stats["all_candidates"]}
