"""WriteShards: crop every kept patch of a chunk's photos from every source and write HDF5 shards
(format 2.0); WriteManifest gathers the chunks into one set."""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import luigi
import numpy as np

from pipeline.store.imageio import image_path, read_rgb
from tasks import graph
from tasks.candidates import candidate_stages
from tasks.corpus import PhotoStage, listing, with_sources
from tasks.degrade import DegradeLR
from tasks.ingest import IngestHR
from tasks.score_patches import ScorePatches
from tasks.select_patches import SelectPatches
from tasks.vqvae_degrade import VQVAEDegradeLR

if TYPE_CHECKING:
    from pipeline.shards.writer import ShardWriter

DATASET = "dataset"


def _crop(image: np.ndarray, x: int, y: int, size: int) -> np.ndarray:
    return image[y:y + size, x:x + size]


class WriteShards(PhotoStage):
    """dataset/: the shard set of one chunk (pipeline.shards; shard-<tag>-NNNNN.h5, the tag
    from the key, so the chunks' files never clash), with the provenance of every upstream
    stage (tasks.graph.provenance), the chunk's unusable photos and, per photo, how many grid
    positions it had, how many passed the texture test, were kept and were written. Sources
    are the photos' paths relative to the input folder: they are in the key (a renamed photo
    rewrites its chunk's shards, nothing upstream)."""

    version = 4  # 4: one chunk; format 2.0 (sources per shard, relative to the input folder)
    global_settings = ("scale",)
    samples_per_shard = luigi.OptionalIntParameter(default=None)
    compression = luigi.OptionalChoiceParameter(choices=["none", "lzf", "gzip"], default=None)

    def requires(self):
        candidates = {f"candidate:{name}": stage
                      for name, stage in candidate_stages(self.chunk).items()}
        return {"hr": IngestHR(chunk=self.chunk), "patches": SelectPatches(chunk=self.chunk),
                "scores": ScorePatches(chunk=self.chunk), "lq": DegradeLR(chunk=self.chunk),
                "lq_vqvae": VQVAEDegradeLR(chunk=self.chunk), **candidates}

    def fingerprint(self) -> dict:
        return {"sources": self.sources}

    @cached_property
    def sources(self) -> dict[str, str]:
        """The chunk's photos' paths relative to the input folder, by id."""
        found = listing()
        return {i: found.source(i) for i in self.photos}

    @property
    def candidate_dirs(self) -> dict[str, Path]:
        return {role.split(":", 1)[1]: stage.out_dir
                for role, stage in self.input_stages().items() if role.startswith("candidate:")}

    def build(self, out: Path) -> dict:
        from pipeline.shards.writer import ShardWriter  # h5py: only when shards are written

        s, scale, inputs = self.settings, self.settings["scale"], self.input_stages()
        patches, table = inputs["patches"].patches(), inputs["scores"].table()
        if table.candidate_names != list(self.candidate_dirs):
            raise RuntimeError(f"ScorePatches scored {table.candidate_names}, WriteShards "
                               f"expected {list(self.candidate_dirs)}")
        images = inputs["hr"].images()
        source_index = {img.id: i for i, img in enumerate(images)}
        by_image: dict[str, list[int]] = defaultdict(list)
        for n in np.flatnonzero(table.keep):
            by_image[str(patches["image_id"][n])].append(int(n))
        size = int(patches["size"])
        writer = ShardWriter(
            out / DATASET, samples_per_shard=s["samples_per_shard"], patch_size=size, scale=scale,
            candidate_names=table.candidate_names, metric_names=table.metric_names,
            metric_lower_better=table.lower_better, metric_modes=table.modes,
            candidate_margins=table.margins, candidate_negative_margins=table.negative_margins,
            compression=None if s["compression"] == "none" else s["compression"],
            params={"stage_key": self.key, **s}, tag=self.key[:12],
            sources=[self.sources[img.id] for img in images],
            provenance=graph.provenance(self),
            manifest_extra={"inputs": self._inputs_record(),
                            "source_patches": self._source_record(images, by_image)})
        with writer:
            for image_id in self.progress(list(by_image), len(by_image), "WriteShards"):
                self._write_image(writer, image_id, by_image[image_id], patches, table,
                                  source_index[image_id])
        return {"samples": int(table.keep.sum()), "patches_selected": len(patches["x"])}

    def _write_image(self, writer: ShardWriter, image_id: str, rows: list[int], patches: dict,
                     table, source: int) -> None:
        scale, size = self.settings["scale"], int(patches["size"])
        original = read_rgb(image_path(self.input_dir("hr"), image_id))
        candidates = [read_rgb(image_path(d, image_id)) for d in self.candidate_dirs.values()]
        lq = read_rgb(image_path(self.input_dir("lq"), image_id))
        lq_vq = read_rgb(image_path(self.input_dir("lq_vqvae"), image_id))
        for n in rows:
            x, y = int(patches["x"][n]), int(patches["y"][n])
            writer.add(
                gt_original=_crop(original, x, y, size),
                gt_candidates=np.stack([_crop(c, x, y, size) for c in candidates])
                if candidates else np.zeros((0, size, size, 3), np.uint8),
                labels=table.labels[n], vote_counts=table.vote_counts[n], scores=table.scores[n],
                lq=_crop(lq, x // scale, y // scale, size // scale),
                lq_vqvae=_crop(lq_vq, x // scale, y // scale, size // scale),
                image_id=image_id, x=x, y=y, source_index=source)

    def _inputs_record(self) -> dict:
        """The chunk's photos: how many, how many built, and those unusable with the reason."""
        ingest = self.input_stages()["hr"]
        rejects = with_sources(ingest.rejects())
        built = len(ingest.images())
        return {"entries": built + len(rejects), "built": built, "rejected": len(rejects),
                "rejects": rejects}

    def _source_record(self, images, by_image: dict[str, list[int]]) -> list[dict]:
        """Per source (the `sources` order): grid positions, how many passed the texture test
        in each version, how many SelectPatches kept, and how many samples were written."""
        stats = self.input_stages()["patches"].stats()
        return [{"image_id": img.id, "grid_positions": stats[img.id]["positions"],
                 "passed_texture": stats[img.id]["passed"],
                 "selected": stats[img.id]["kept"], "samples": len(by_image.get(img.id, []))}
                for img in images]
