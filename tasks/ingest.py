"""IngestHR: decode, validate and normalise the input photos."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import luigi

from pipeline import ingest
from pipeline.cache import write_json_atomic
from pipeline.imageio import image_path, write_rgb
from tasks.base import Stage
from tasks.config import gtforge


class IngestHR(Stage):
    version = 1
    input_dir = luigi.OptionalParameter(default=None, significant=False)
    min_side = luigi.OptionalIntParameter(default=None)
    max_pixels = luigi.OptionalIntParameter(default=None)
    alpha = luigi.OptionalChoiceParameter(choices=["composite", "reject"], default=None)

    @property
    def folder(self) -> Path:
        return Path(self.input_dir or gtforge().input_dir)

    def requires(self):
        return []

    def fingerprint(self) -> dict:
        # The folder's content decides the output, not its path.
        return {"inputs": ingest.folder_fingerprint(self.folder)}

    def build(self, out: Path) -> dict:
        s = self.settings
        (out / "images").mkdir()
        accepted: list[ingest.HRImage] = []
        rejects: list[dict] = []
        seen: dict[str, str] = {}
        files = ingest.list_inputs(self.folder)
        for path in self.progress(files, len(files)):
            source = os.fsdecode(path)
            try:
                image_id, digest = ingest.content_id(path)
                if image_id in seen:
                    raise ingest.Rejected(f"duplicate of {seen[image_id]}")
                rgb = ingest.decode_hr(path, s["min_side"], s["max_pixels"], s["alpha"])
            except ingest.Rejected as reason:
                rejects.append({"source": source, "reason": str(reason)})
                continue
            seen[image_id] = source
            write_rgb(image_path(out, image_id), rgb)
            accepted.append(ingest.HRImage(image_id, source, rgb.shape[1], rgb.shape[0], digest))
        write_json_atomic(out / ingest.IMAGES_JSON, [asdict(a) for a in accepted])
        write_json_atomic(out / ingest.REJECTS_JSON, rejects)
        if not accepted:
            raise RuntimeError(f"no usable image in {self.folder}: "
                               f"{len(rejects)} rejected (see the reasons above)"
                               + "".join(f"\n  {r['source']}: {r['reason']}" for r in rejects))
        return {"accepted": len(accepted), "rejected": len(rejects)}
