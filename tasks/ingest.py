"""IngestHR: decode, validate and normalise the input photos."""

from __future__ import annotations

import os
from dataclasses import asdict
from functools import cached_property
from pathlib import Path

import luigi

from pipeline.image import ingest
from pipeline.store import durable
from pipeline.store.imageio import image_path, write_rgb
from tasks.base import Stage, input_hashes
from tasks.config import gtforge


class IngestHR(Stage):
    """images/<id>.png (uint8 sRGB), images.json (the accepted photos) and rejects.json (every
    other entry of the input folder with its reason): together they account for every entry."""

    version = 2
    input_dir = luigi.OptionalParameter(default=None, significant=False)
    min_side = luigi.OptionalIntParameter(default=None)
    max_pixels = luigi.OptionalIntParameter(default=None)
    alpha = luigi.OptionalChoiceParameter(choices=["composite", "reject"], default=None)

    @property
    def folder(self) -> Path:
        return Path(self.input_dir or gtforge().input_dir)

    def requires(self):
        return []

    @cached_property
    def _inputs(self) -> list[list]:
        # Walked and hashed once per instance, as the key is computed once (Stage.key).
        return ingest.folder_fingerprint(self.folder, input_hashes())

    def fingerprint(self) -> dict:
        # The folder's content decides the output, not its path.
        return {"inputs": self._inputs}

    def provenance(self) -> dict:
        # The folder and its count of entries, not a row per file.
        return {**super().provenance(), "facts": {"input_dir": os.fsdecode(self.folder),
                                                 "entries": len(self.fingerprint()["inputs"])}}

    def images(self) -> list[ingest.HRImage]:
        """The accepted photos, in images.json order."""
        return ingest.read_images(self.out_dir)

    def rejects(self) -> list[dict]:
        """Every other entry of the input folder: {"source", "reason"}."""
        return ingest.read_rejects(self.out_dir)

    def build(self, out: Path) -> dict:
        s = self.settings
        (out / "images").mkdir()
        accepted: list[ingest.HRImage] = []
        rejects: list[dict] = []
        seen: dict[str, str] = {}
        entries = ingest.walk_inputs(self.folder)
        for entry in self.progress(entries, len(entries)):
            source = os.fsdecode(entry.path)
            try:
                if entry.problem is not None:
                    raise ingest.Rejected(entry.problem)
                image_id, digest = ingest.content_id(entry.path)
                if image_id in seen:
                    raise ingest.Rejected(f"duplicate of {seen[image_id]}")
                photo = ingest.decode_hr(entry.path, s["min_side"], s["max_pixels"], s["alpha"])
            except ingest.Rejected as reason:
                rejects.append({"source": source, "reason": str(reason)})
                continue
            seen[image_id] = source
            write_rgb(image_path(out, image_id), photo.rgb)
            h, w = photo.rgb.shape[:2]
            accepted.append(ingest.HRImage(image_id, source, w, h, digest, photo.converted_from))
        durable.write_json(out / ingest.IMAGES_JSON, [asdict(a) for a in accepted])
        durable.write_json(out / ingest.REJECTS_JSON, rejects)
        if not accepted:
            raise RuntimeError(f"no usable image in {self.folder}: "
                               f"{len(rejects)} rejected (see the reasons above)"
                               + "".join(f"\n  {ingest.display_path(r['source'])}: {r['reason']}"
                                         for r in rejects))
        return {"entries": len(entries), "accepted": len(accepted), "rejected": len(rejects),
                "converted_to_srgb": {a.id: a.converted_from for a in accepted
                                      if a.converted_from}}
