"""IngestHR: decode, validate and normalise the photos of one chunk."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import luigi

from pipeline.image import ingest
from pipeline.store import durable
from pipeline.store.imageio import image_path, write_rgb
from tasks.corpus import PhotoStage, locate


class IngestHR(PhotoStage):
    """images/<id>.png (uint8 sRGB), images.json (the chunk's accepted photos) and unusable.json
    (its photos that cannot be used, by id, with the reason). The key holds the photos' content
    ids, not their paths: a photo moved, renamed, touched or copied to another host is the same
    photo. The input folder's other entries are listed by the Listing (tasks.corpus)."""

    version = 3  # 3: one chunk of photos, by content id
    min_side = luigi.OptionalIntParameter(default=None)
    max_pixels = luigi.OptionalIntParameter(default=None)
    alpha = luigi.OptionalChoiceParameter(choices=["composite", "reject"], default=None)

    def requires(self):
        return []

    def images(self) -> list[ingest.HRImage]:
        """The accepted photos, in images.json order (by id)."""
        return ingest.read_images(self.out_dir)

    def rejects(self) -> list[dict]:
        """The chunk's photos that cannot be used: {"image_id", "reason"}."""
        return ingest.read_unusable(self.out_dir)

    def build(self, out: Path) -> dict:
        s = self.settings
        (out / "images").mkdir()
        accepted: list[ingest.HRImage] = []
        rejects: list[dict] = []
        for image_id in self.progress(self.photos, len(self.photos)):
            path = locate(image_id)[0]
            try:
                found, digest = ingest.content_id(path)
                if found != image_id:
                    raise RuntimeError(f"{path} changed while the build ran (its content id was "
                                       f"{image_id}, is {found}): run the build again")
                photo = ingest.decode_hr(path, s["min_side"], s["max_pixels"], s["alpha"])
            except ingest.Rejected as reason:
                rejects.append({"image_id": image_id, "reason": str(reason)})
                continue
            write_rgb(image_path(out, image_id), photo.rgb)
            h, w = photo.rgb.shape[:2]
            accepted.append(ingest.HRImage(image_id, w, h, digest, photo.converted_from))
        durable.write_json(out / ingest.IMAGES_JSON, [asdict(a) for a in accepted])
        durable.write_json(out / ingest.UNUSABLE_JSON, rejects)
        return {"photos": len(self.photos), "accepted": len(accepted), "rejected": len(rejects),
                "converted_to_srgb": {a.id: a.converted_from for a in accepted
                                      if a.converted_from}}
