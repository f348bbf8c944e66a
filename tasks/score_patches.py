"""ScorePatches: annotators (the learned judge, pyiqa metrics) label every candidate of every
patch Positive / Similar / Negative."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import luigi
import numpy as np

from pipeline.image.crops import version_chunks as crop_chunks
from pipeline.quality import scores as score_table
from pipeline.quality import voting
from pipeline.quality.judge import HEADS
from pipeline.store import durable
from pipeline.store.imageio import image_path
from tasks.candidates import candidate_stages
from tasks.config import gtforge
from tasks.corpus import PhotoStage
from tasks.ingest import IngestHR
from tasks.select_patches import SelectPatches
from tasks.train_judge import TrainJudge

DIFFERENCE = "difference.npz"
JUDGE_STAGE = "judge"
LABEL_STATS = "label_stats.json"
ROLES = ("patches", "hr")


class ScorePatches(PhotoStage):
    """scores.npz: a pipeline.quality.scores.ScoreTable over the SelectPatches order (`table()`
    reads it); difference.npz: difference (N,K) float32 and the measure used;
    label_stats.json: label counts (pipeline.quality.voting.label_stats) and filters. Annotators:
    the `metrics` (pyiqa names; "judge" and "neighbours" for the three heads of TrainJudge's
    judge and of its neighbours annotator)."""

    version = 5  # 5: abstentions; 4: the neighbours annotator, margins per sign
    uses_iqa = True
    metrics = luigi.OptionalListParameter(default=None)
    margins = luigi.OptionalDictParameter(default=None)
    fr_policy = luigi.OptionalChoiceParameter(choices=list(voting.FR_POLICIES), default=None)
    difference_measure = luigi.OptionalChoiceParameter(
        choices=list(voting.DIFFERENCE_MEASURES), default=None)
    difference_threshold = luigi.OptionalFloatParameter(default=None)
    drop_all_similar = luigi.OptionalBoolParameter(default=None)
    batch = luigi.OptionalIntParameter(default=None, significant=False)  # patches per round

    def requires(self):
        deps = {"patches": SelectPatches(chunk=self.chunk), "hr": IngestHR(chunk=self.chunk),
                **candidate_stages(self.chunk)}
        if set(voting.LEARNED) & set(self.settings["metrics"]):
            deps[JUDGE_STAGE] = TrainJudge()
        return deps

    def table(self) -> score_table.ScoreTable:
        """The scores and labels this stage wrote."""
        return score_table.load(self.out_dir)

    @property
    def candidate_dirs(self) -> dict[str, Path]:
        return {name: stage.out_dir for name, stage in self.input_stages().items()
                if name not in (*ROLES, JUDGE_STAGE)}

    def _margins(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each annotator's margins for each candidate, float64 (K, M) for a Positive vote and
        for a Negative one: `margins` (both signs), else TrainJudge's calibration for that
        candidate (the judge's heads: one for both signs; the neighbours' heads: one each).
        NaN where an annotator does not judge a candidate: the neighbours judge only the
        candidates of a generator, and with both configured the judge only the others."""
        judge, candidates = self.input_stages().get(JUDGE_STAGE), list(self.candidate_dirs)
        calibrated = {c: ({}, {}) for c in [None, *candidates]}
        if judge is not None:
            both = set(voting.LEARNED) <= set(self.settings["metrics"])
            own = judge.neighbour_margins([None, *candidates])
            for c, heads in judge.candidate_margins([None, *candidates]).items():
                for side in calibrated[c]:
                    side.update({f"{voting.JUDGE}_{h}": np.nan if both and own[c] else v
                                 for h, v in heads.items()})
            for c, signs in own.items():
                for side, key in zip(calibrated[c], ("positive", "negative"), strict=True):
                    side.update({f"{voting.NEIGHBOURS}_{h}": signs[key][h] if signs else np.nan
                                 for h in HEADS})
        overrides = self.settings["margins"]
        missing = [m for m in names if m not in {**calibrated[None][0], **overrides}]
        if missing:
            raise ValueError(f"[ScorePatches] margins has no value for {missing} "
                             f"(metrics = {self.settings['metrics']}, margins = {overrides})")

        def rows(side: int) -> np.ndarray:
            values = [[float({**calibrated[c][side], **overrides}[m]) for m in names]
                      for c in candidates]
            return np.array(values, np.float64).reshape(len(candidates), len(names))

        return rows(0), rows(1)

    def _scorer(self, device):
        """scores(original (n,H,W,3), candidates (n,K,H,W,3)) -> (n,K+1,M), every annotator."""
        from pipeline.quality import annotate, neighbours
        from pipeline.quality.judge import judge

        metrics = [str(m) for m in self.settings["metrics"]]
        stage, names = self.input_stages().get(JUDGE_STAGE), list(self.candidate_dirs)
        model = stage.load_model(device) if voting.JUDGE in metrics else None
        table = stage.gain_table() if voting.NEIGHBOURS in metrics else None

        def one(metric: str, original: np.ndarray, candidates: np.ndarray) -> np.ndarray:
            if metric == voting.JUDGE:
                return annotate.pairwise_scores(judge(model, original, candidates, device))
            if metric == voting.NEIGHBOURS:
                return annotate.pairwise_scores(
                    neighbours.judged(table, names, original, candidates))
            return annotate.score_patches(original, candidates, [metric], device)

        def scores(original: np.ndarray, candidates: np.ndarray) -> np.ndarray:
            return np.concatenate([one(m, original, candidates) for m in metrics], axis=2)

        return scores

    def _crops(self, patches: dict, scratch: Path):
        """(patch indices, originals (n,H,W,3), candidates (n,K,H,W,3)) in chunks of at most
        `batch` patches, image by image; the versions of an image are spilled to `scratch`
        and read back by rows (pipeline.image.crops), so no image is held decoded K+1 times."""
        size = patches["size"]
        by_image: dict[str, list[int]] = defaultdict(list)
        for i, image_id in enumerate(patches["image_id"]):
            by_image[str(image_id)].append(i)
        for image_id in self.progress(list(by_image), len(by_image), "ScorePatches"):
            rows = np.array(by_image[image_id])
            paths = [image_path(self.input_dir("hr"), image_id),
                     *(image_path(folder, image_id) for folder in self.candidate_dirs.values())]
            try:
                for idx, crops in crop_chunks(paths, patches["x"][rows], patches["y"][rows],
                                              size, self.resolved("batch"), scratch):
                    yield rows[idx], crops[:, 0], crops[:, 1:]
            except ValueError as e:
                raise RuntimeError(f"{image_id}: {e}") from None
            finally:
                for file in scratch.glob("*.raw"):
                    file.unlink()

    def build(self, out: Path) -> dict:
        from pipeline.quality import annotate
        from pipeline.train.device import resolve_device

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
        scratch = out / ".scratch"
        scratch.mkdir()
        for idx, original, candidates in self._crops(patches, scratch):
            scores[idx] = score(original, candidates)
            differences[idx] = annotate.difference(original, candidates,
                                                   s["difference_measure"], device)
        scratch.rmdir()
        scores[:, 1:][:, np.isnan(margins[0])] = np.nan  # no margin: that annotator abstains
        table = self._label(scores, differences, infos, margins, names)
        score_table.save(out, table)
        np.savez(out / DIFFERENCE, difference=differences,
                 measure=np.array(s["difference_measure"]))
        stats = self._stats(table, differences, infos)
        durable.write_json(out / LABEL_STATS, stats)
        return {"patches": n, "kept": int(table.keep.sum()), "candidates": table.candidate_names,
                "metrics": names, "difference_measure": s["difference_measure"],
                "labels": stats["all_candidates"]}

    def _label(self, scores: np.ndarray, differences: np.ndarray, infos: list,
               margins: tuple[np.ndarray, np.ndarray],
               names: list[str]) -> score_table.ScoreTable:
        s = self.settings
        full_reference = [info.full_reference for info in infos]
        votes = voting.vote(scores, margins[0], [info.lower_better for info in infos],
                            full_reference, negative_margins=margins[1])
        judged = np.isfinite(scores[:, 1:]) & np.isfinite(scores[:, :1])  # NaN: abstains
        labels = voting.label(votes, full_reference, s["fr_policy"], judged)
        who = voting.voters(full_reference, s["fr_policy"])
        counts = voting.vote_counts(votes[..., who], judged[..., who])
        keep = voting.difference_keep(differences, s["difference_threshold"])
        if s["drop_all_similar"]:
            keep &= voting.informative(labels)
        return score_table.ScoreTable(
            keep=keep, labels=labels, vote_counts=counts, scores=scores, votes=votes,
            candidate_names=list(self.candidate_dirs), metric_names=names,
            lower_better=[info.lower_better for info in infos],
            modes=[info.mode for info in infos], margins=margins[0],
            negative_margins=margins[1])

    def _stats(self, table: score_table.ScoreTable, differences: np.ndarray,
               infos: list) -> dict:
        s, k = self.settings, len(table.candidate_names)
        stats = voting.label_stats(table.labels, table.votes, table.keep,
                                     table.candidate_names, table.metric_names)
        stats["metrics"] = [{"name": info.name, "mode": info.mode,
                             "lower_better": info.lower_better, "score_range": info.score_range,
                             "margins": _by_candidate(table.candidate_names, above),
                             "negative_margins": _by_candidate(table.candidate_names, below)}
                            for info, above, below in zip(infos, table.margins.T,
                                                          table.negative_margins.T, strict=True)]
        stats["fr_policy"] = s["fr_policy"]
        differs = voting.difference_keep(differences, s["difference_threshold"])
        informative = voting.informative(table.labels)
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


def _by_candidate(names: list[str], margins: np.ndarray) -> dict[str, float | None]:
    """{candidate: margin}, JSON-ready: None where the annotator did not judge it (NaN)."""
    return {n: None if np.isnan(v) else float(v) for n, v in zip(names, margins, strict=True)}
