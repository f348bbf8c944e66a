"""PublishDataset: place the shard set and the report in [gtforge] out_dir, atomically."""

from __future__ import annotations

import json
from pathlib import Path

import luigi

from pipeline.store import durable
from tasks.config import gtforge
from tasks.report import Report
from tasks.write_manifest import WriteManifest
from tasks.write_shards import DATASET

BUILD_JSON = "build.json"


def _link_tree(src: Path, dest: Path) -> None:
    """Hard-link every file of `src` into `dest` (a copy where links are impossible)."""
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        durable.link_file(path, dest / path.relative_to(src))


class PublishDataset(luigi.Task):
    """Not cached by key: out_dir is the user's folder. It is up to date when its build.json
    names the keys of the shards and report it holds."""

    def requires(self):
        return {"shards": WriteManifest(), "report": Report()}

    @property
    def out_dir(self) -> Path:
        return Path(gtforge().out_dir)

    def _build_record(self) -> dict:
        return {name: {"stage": t.get_task_family(), "key": t.key, "path": str(t.out_dir)}
                for name, t in self.requires().items()}

    def complete(self) -> bool:
        try:
            return json.loads((self.out_dir / BUILD_JSON).read_text()) == self._build_record()
        except (OSError, ValueError):
            return False

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.out_dir / BUILD_JSON))

    def run(self) -> None:
        staging = durable.staging_dir(self.out_dir)
        _link_tree(self.requires()["shards"].out_dir / DATASET, staging)
        _link_tree(self.requires()["report"].out_dir / "report", staging / "report")
        durable.write_json(staging / BUILD_JSON, self._build_record(), sync=False)
        durable.publish_dir(staging, self.out_dir)


class BuildDataset(luigi.WrapperTask):
    """The whole DAG: shards and report in [gtforge] out_dir."""

    def requires(self):
        return PublishDataset()
