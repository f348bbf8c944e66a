"""The photos a build uses: the input folder by content, cut into chunks (pipeline.image.chunks),
the pinned training set, and PhotoStage, the base of every stage that works photo by photo on
one chunk."""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import luigi

from pipeline.image.chunks import partition, sample
from pipeline.image.ingest import Listing, display_path, list_folder
from pipeline.store import durable
from tasks.base import Stage, input_hashes
from tasks.config import gtforge

# in [gtforge] workdir: {input folder: the content ids of its photos the models train on}
TRAINING_SET_JSON = "training-set.json"

_listings: dict[str, Listing] = {}


def listing(folder: Path | str | None = None) -> Listing:
    """The Listing of `folder` (default: [gtforge] input_dir), walked once per process."""
    path = os.fsdecode(folder or gtforge().input_dir)
    if path not in _listings:
        _listings[path] = list_folder(Path(path), input_hashes())
    return _listings[path]


def forget_listings() -> None:
    """Walk the folders again at the next listing() (the folder changed in this process)."""
    _listings.clear()


def with_sources(unusable: list[dict]) -> list[dict]:
    """IngestHR's unusable photos ({"image_id", "reason"}) as {"source", "reason"}, the
    source their path in their folder (locate)."""
    return [{"source": locate(r["image_id"])[1], "reason": r["reason"]} for r in unusable]


def no_usable_photo(rejects: list[dict]) -> RuntimeError:
    """The error of a build with no photo to work on, naming every entry and its reason."""
    return RuntimeError(f"no usable image in {gtforge().input_dir}: {len(rejects)} rejected"
                        + "".join(f"\n  {display_path(r['source'])}: {r['reason']}"
                                  for r in rejects))


def corpus_chunks() -> list[tuple[str, ...]]:
    """The input folder's photos in chunks of about [gtforge] chunk_photos."""
    return partition(listing().photos, gtforge().chunk_photos)


def training_ids() -> list[str]:
    """The photos the models train on: [gtforge] training_sample of them (all when 0; a
    seeded sample, pipeline.image.chunks.sample) from those of [gtforge] training_set when it
    names a folder, else from those pinned for the input folder in <workdir>/training-set.json:
    its photos at its first build (remove its entry, or the file, to retrain on today's
    photos)."""
    config = gtforge()
    return sample(_training_pool(), config.training_sample, config.seed)


def _training_pool() -> list[str]:
    config = gtforge()
    if config.training_set:
        return sorted(listing(config.training_set).photos)
    path = Path(config.workdir) / TRAINING_SET_JSON
    try:
        pinned = json.loads(path.read_text())
    except FileNotFoundError:
        pinned = {}
    folder = os.fsdecode(Path(config.input_dir).resolve())
    if folder not in pinned:
        pinned[folder] = sorted(listing().photos)
        path.parent.mkdir(parents=True, exist_ok=True)
        durable.write_json(path, pinned)
    return pinned[folder]


def training_chunks() -> list[tuple[str, ...]]:
    """The training photos in chunks (the same chunks as the corpus's where they agree)."""
    return partition(training_ids(), gtforge().chunk_photos)


def locate(image_id: str) -> tuple[Path, str]:
    """(file, path relative to its folder) of photo `image_id`: in the input folder, else in
    the training_set folder. FileNotFoundError naming the id when neither holds it."""
    for folder in (None, gtforge().training_set or None):
        found = listing(folder)
        if image_id in found.photos:
            return found.photos[image_id], found.source(image_id)
    raise FileNotFoundError(
        f"photo {image_id} is in the build (a chunk or the pinned training set, "
        f"{TRAINING_SET_JSON}) but no longer in {gtforge().input_dir}: put it back, or "
        f"delete <workdir>/{TRAINING_SET_JSON} to retrain on today's photos")


class PhotoStage(Stage):
    """A stage that works photo by photo on one chunk (`chunk`: content ids; empty: every
    photo of the input folder). Its key holds the chunk's ids, never their paths."""

    chunk = luigi.TupleParameter(default=())

    @cached_property
    def photos(self) -> tuple[str, ...]:
        """The content ids this stage works on, sorted."""
        return tuple(sorted(self.chunk)) if self.chunk else tuple(sorted(listing().photos))

    def provenance(self) -> dict[str, Any]:
        # the record names how many photos, not which: the key already pins them
        found = super().provenance()
        settings = {k: v for k, v in found["settings"].items() if k != "chunk"}
        return {**found, "settings": settings, "photos": len(self.photos)}

    def resolved(self, name: str) -> Any:
        # the key holds the photos themselves, so `chunk=()` and the same ids spelt out agree
        if name == "chunk":
            return list(self.photos)
        return super().resolved(name)
