"""WriteManifest: the shard sets of every chunk of the input folder as one set."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.image.ingest import REJECTS_JSON
from pipeline.store import durable
from tasks import graph
from tasks.base import Stage
from tasks.config import gtforge
from tasks.corpus import corpus_chunks, listing, no_usable_photo
from tasks.write_shards import DATASET, WriteShards


class WriteManifest(Stage):
    """dataset/: every chunk's shards (hard links) and the set's manifest.json
    (pipeline.shards.merge), with the provenance of the whole build and the input folder's
    accounting: every entry is built, or listed with the reason it is not (also rejects.json).
    Cheap: adding a photo reruns the chunk that holds it and this stage."""

    version = 1

    def requires(self):
        return {f"chunk:{i}": WriteShards(chunk=chunk)
                for i, chunk in enumerate(corpus_chunks())}

    def fingerprint(self) -> dict:
        # what the manifest records beyond the chunks: the folder and its other entries
        return {"input_dir": os.fsdecode(gtforge().input_dir), "rejects": listing().rejects}

    def _inputs_record(self, chunks: list[dict]) -> dict:
        """The input folder's entries: how many, how many built, and every other one with
        its reason (not a photo file, a duplicate, or a photo that cannot be used)."""
        rejects = listing().rejects + [r for c in chunks for r in c["rejects"]]
        built = sum(c["built"] for c in chunks)
        return {"input_dir": os.fsdecode(gtforge().input_dir), "entries": built + len(rejects),
                "built": built, "rejected": len(rejects), "rejects": rejects}

    def _check(self, inputs: dict, selected: int) -> None:
        """RuntimeError when nothing can be built: no usable photo, or no patch anywhere."""
        if not inputs["built"]:
            raise no_usable_photo(inputs["rejects"])
        if not selected:
            raise RuntimeError(f"no patch of {inputs['built']} images passed the texture test: "
                               "lower the thresholds (std_min, hf_min) or crop_size in "
                               "[SelectPatches]")

    def build(self, out: Path) -> dict:
        from pipeline.shards import merge, spec  # h5py: only when a set is written

        chunks = [stage.out_dir / DATASET for stage in self.input_stages().values()]
        records = [spec.read_manifest(folder) for folder in chunks]
        inputs = self._inputs_record([m["inputs"] for m in records])
        self._check(inputs, sum(row["selected"] for m in records for row in m["source_patches"]))
        durable.write_json(out / REJECTS_JSON, inputs["rejects"])
        manifest = merge.merge_sets(chunks, out / DATASET, {
            "params": {"stage_key": self.key, "chunks": len(chunks)},
            "provenance": graph.provenance(self), "inputs": inputs})
        return {"chunks": len(chunks), "samples": manifest["samples"],
                "shards": len(manifest["shards"]), "built": inputs["built"],
                "rejected": inputs["rejected"]}
