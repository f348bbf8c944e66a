"""MeasureTruth / EvaluateTargets: a build judged against clean references it never saw
([gtforge] references; docs/QUALITY.md). Both are reached through the Report when a reference
folder is set (EvaluateTargets only with [gtforge] evaluate = true), or by `gtforge evaluate`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import luigi
import numpy as np

from pipeline.image.degrade import Recipe
from pipeline.image.ingest import folder_fingerprint
from pipeline.quality import results, truth
from pipeline.store.imageio import image_path, read_rgb
from pipeline.store.seeding import rng
from tasks.base import Stage, input_hashes
from tasks.config import gtforge
from tasks.corpus import corpus_chunks, listing
from tasks.degrade import DegradeLR, load_recipe
from tasks.ingest import IngestHR
from tasks.write_manifest import WriteManifest
from tasks.write_shards import DATASET

if TYPE_CHECKING:
    from pipeline.shards.reader import ShardSet
    from pipeline.train import evaluate as ev


HELDOUT_LR = ("gt", "clean")  # what the held-out photos' LR is made from


class _WithReferences:
    """The reference folder (its content enters the key) and the shard set it judges."""

    @functools.cached_property
    def references(self) -> dict[str, Path]:
        folder = gtforge().references
        if not folder:
            raise ValueError(f"{self.get_task_family()} needs [gtforge] references: a folder "
                             "of clean photos named like the input photos")
        return truth.reference_index(Path(folder))

    def fingerprint(self) -> dict:
        return {"references": folder_fingerprint(Path(gtforge().references), input_hashes())}

    def shard_set(self) -> ShardSet:
        from pipeline.shards.reader import ShardSet  # h5py: only for a stage that runs

        return ShardSet(self.input_dir("shards") / DATASET)


class MeasureTruth(_WithReferences, Stage):
    """truth.json: per candidate, its gain over the original in distance to the clean
    reference (PSNR, SSIM, edge PSNR), the oracle labels (tau dB PSNR) against the build's
    labels as a confusion matrix with Positive/Negative precision and recall, and the same
    over every candidate."""

    version = 1

    def requires(self):
        return {"shards": WriteManifest()}

    def build(self, out: Path) -> dict:
        found = truth.measure_shards(self.shard_set(), self.references)
        result = {"tau_db": truth.ORACLE_TAU_DB,
                  "candidates": {n: t.summary() for n, t in found.items()},
                  "overall": truth.overall(found)}
        results.save_truth(out, result)
        return {"overall": result["overall"]}


class EvaluateTargets(_WithReferences, Stage):
    """evaluation.json: a SmallSR trained per target (original, hggt, fused, clean, ...), seed
    and fold on the samples of the fold's training photos, PSNR/SSIM of each on the fold's
    held-out photos against their references, and the comparison over every (fold, seed)
    (pipeline.train.evaluate.compare)."""

    version = 2  # 2: photos by source path (chunked builds)
    heavy = True
    global_settings = ("scale",)
    targets = luigi.OptionalListParameter(default=None)
    seeds = luigi.OptionalIntParameter(default=None)
    steps = luigi.OptionalIntParameter(default=None)
    holdout = luigi.OptionalFloatParameter(default=None)  # share of the photos held out
    # 1: one split (`holdout`); k >= 2: k folds, every photo held out once (`holdout` unused)
    folds = luigi.OptionalIntParameter(default=None)
    # the held-out photos' LR is made from their imperfect GT ("gt") or their clean reference
    heldout_lr = luigi.OptionalChoiceParameter(choices=list(HELDOUT_LR), default=None)
    heldout_draws = luigi.OptionalIntParameter(default=None)  # LR draws per held-out photo
    loss = luigi.OptionalParameter(default=None)  # the networks' loss: l1 or mse

    def requires(self):
        return {"shards": WriteManifest(),
                **{f"hr:{i}": IngestHR(chunk=c) for i, c in enumerate(corpus_chunks())}}

    def fingerprint(self) -> dict:
        # the held-out photos' LR is made with the build's DegradeLR recipe
        return {**super().fingerprint(), "recipe_values": self.recipe.asdict()}

    @functools.cached_property
    def recipe(self) -> Recipe:
        """The DegradeLR recipe of the build."""
        return load_recipe(DegradeLR().settings["recipe"])

    @functools.cached_property
    def image_ids(self) -> dict[str, str]:
        """{source path: image id} of the input photos."""
        return {listing().source(i): i for i in listing().photos}

    @functools.cached_property
    def hr_folders(self) -> dict[str, Path]:
        """{image id: the IngestHR folder holding it}: read once, not per fold."""
        return {img.id: stage.out_dir for stage in self.input_stages().values()
                if isinstance(stage, IngestHR) for img in stage.images()}

    def splits(self, shards: ShardSet) -> list[tuple[set[str], list[str]]]:
        """(training sources, held-out sources) per fold among the sources with a reference,
        in a seeded order: with `folds` = 1 a share `holdout` of them is held out (at least
        one); with k folds, every k-th source from the fold's index, each source once."""
        usable = sorted(s for s in shards.manifest["sources"]
                        if truth.reference_for(s, self.references))
        order = rng(self.key, "split").permutation(usable).tolist()
        folds = self.settings["folds"]
        if folds <= 1:
            held = max(1, int(round(self.settings["holdout"] * len(order))))
            return [(set(order[held:]), sorted(order[:held]))]
        if len(order) < folds:
            raise ValueError(f"EvaluateTargets folds = {folds} needs at least {folds} photos "
                             f"with a reference; {len(order)} have one")
        return [(set(order) - set(order[f::folds]), sorted(order[f::folds]))
                for f in range(folds)]

    def samples(self, shards: ShardSet, train: set[str]) -> ev.Samples:
        """The training photos' samples in memory, with their clean crops."""
        from pipeline.train import evaluate as ev

        parts: dict[str, list] = {k: [] for k in ("lq", "original", "candidates", "labels",
                                                   "clean")}
        for shard, n, clean in truth.referenced_samples(shards, self.references, keep=train):
            parts["lq"].append(shard.image("lq", n))
            parts["original"].append(shard.image("gt_original", n))
            parts["candidates"].append(np.stack([shard.image("gt_candidates", n, k) for k
                                                 in range(len(shards.candidate_names))]))
            parts["labels"].append(shard.labels[n])
            parts["clean"].append(clean)
        return ev.Samples(*(np.stack(parts[k]) for k in ("lq", "original", "candidates",
                                                          "labels", "clean")),
                          names=list(shards.candidate_names))

    def heldout(self, held: list[str]) -> list[ev.HeldOut]:
        """Every held-out photo with its clean reference and `heldout_draws` LR draws, made
        with the build's DegradeLR recipe from the photo's GT, or with `heldout_lr` = clean
        from its clean reference (an LR of the true scene)."""
        from pipeline.train import evaluate as ev

        draws = self.settings["heldout_draws"]
        if draws < 1:
            raise ValueError(f"EvaluateTargets heldout_draws must be at least 1, got {draws}")
        photos = []
        for source in held:
            image_id = self.image_ids[source]
            clean = read_rgb(truth.reference_for(source, self.references))
            start = (clean if self.settings["heldout_lr"] == "clean"
                     else read_rgb(image_path(self.hr_folders[image_id], image_id)))
            # draw 0 keeps the seed of one-draw evaluations
            seeds = [image_id] + [(image_id, d) for d in range(1, draws)]
            photos.append(ev.HeldOut(source, clean,
                                     [ev.heldout_lr(start, self.recipe, s) for s in seeds]))
        return photos

    def build(self, out: Path) -> dict:
        from pipeline.train import evaluate as ev
        from pipeline.train.device import resolve_device

        s = self.settings
        device = resolve_device(gtforge().device)
        shards = self.shard_set()
        splits = self.splits(shards)
        sizes: list[int] = []

        def runs():
            """(samples, held-out photos, target, seed) fold by fold: one fold in memory."""
            for train, held in splits:
                samples, photos = self.samples(shards, train), self.heldout(held)
                sizes.append(len(samples.lq))
                for seed in range(s["seeds"]):
                    for target in s["targets"]:
                        yield samples, photos, target, seed

        total = len(splits) * s["seeds"] * len(s["targets"])
        measured: dict[str, list[dict]] = {t: [] for t in s["targets"]}
        for samples, photos, target, seed in self.progress(runs(), total, "EvaluateTargets"):
            model = ev.train(samples, target, seed, s["steps"], s["scale"], loss=s["loss"],
                             device=device)
            measured[target].append(ev.measure(model, photos, device))
        held_names = sorted(source for _, held in splits for source in held)
        report = {"folds": len(splits), "training_samples": sizes, "heldout": held_names,
                  "heldout_draws": s["heldout_draws"], "loss": s["loss"], "runs": measured,
                  "comparison": ev.compare(measured)}
        if "original" in measured:
            report["photo_gains"] = ev.photo_gains(measured)
        results.save_evaluation(out, report)
        return {"comparison": report["comparison"], "heldout": held_names}

