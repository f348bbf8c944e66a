"""Stage: the base of every gtforge task (cache key, atomic output, manifest, progress)."""

from __future__ import annotations

import json
import shutil
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import luigi

from pipeline.ops.memory import release_free_memory
from pipeline.ops.progress import track
from pipeline.store import cache
from pipeline.store import hashes as cache_hashes
from pipeline.store.seeding import derive_seed
from tasks.config import gtforge, network_precision, preset_setting

if TYPE_CHECKING:
    from pipeline.train.precision import Precision


HASHES_JSON = "input-hashes.json"  # in [gtforge] workdir: sha256 of input files, by path


def input_hashes() -> cache_hashes.HashCache:
    """The workdir's remembered sha256 of input files (pipeline.store.hashes)."""
    return cache_hashes.HashCache(Path(gtforge().workdir) / HASHES_JSON)


class StageTarget(luigi.LocalTarget):
    """A stage folder; it exists only once its manifest (written last) is there."""

    def exists(self) -> bool:
        return cache.is_complete(Path(self.path))


class Stage(luigi.Task):
    """A cached stage. Subclasses declare luigi parameters (default None = take the preset's
    value from luigi.cfg), `requires()`, and `build(out)` which writes into `out` and may
    return extra facts for the manifest. Bump `version` when the output of the code changes.
    """

    version: ClassVar[int] = 1
    # [gtforge] settings that change this stage's output, added to its key.
    global_settings: ClassVar[tuple[str, ...]] = ()
    # Keep the partial folder of a killed run (training checkpoints) instead of clearing it.
    resumable: ClassVar[bool] = False
    # A network trains or runs: hold the `gpu` resource on a CUDA device (luigid runs one at a
    # time per host), the `cpu` one on the CPU ([resources] in luigi.cfg).
    heavy: ClassVar[bool] = False
    # The stage creates pyiqa metrics: [gtforge] iqa_weights applies to it.
    uses_iqa: ClassVar[bool] = False

    @property
    def resources(self) -> dict[str, int]:
        if not self.heavy:
            return {}
        return {"cpu" if gtforge().device == "cpu" else "gpu": 1}

    def resolved(self, name: str) -> Any:
        """One parameter's value, taken from the preset in luigi.cfg when it is None; also
        for parameters outside the key (checkpoint intervals, paths of weight files)."""
        value = getattr(self, name)
        if value is None:
            value = preset_setting(self.get_task_family(), name, dict(self.get_params())[name],
                                   self.variant)
        return value

    @property
    def variant(self) -> str | None:
        """A name whose own luigi.cfg sections come first ([<preset>.<Stage>.<variant>]),
        e.g. an enhancer's backbone; None for most stages."""
        return None

    @cached_property
    def settings(self) -> dict[str, Any]:
        """Every significant parameter, with None filled in from the preset, plus the
        [gtforge] settings this stage uses. JSON-ready."""
        values: dict[str, Any] = {}
        for name, param in self.get_params():
            if not param.significant:
                continue
            values[name] = self.resolved(name)
        config = gtforge()
        values["seed"] = config.seed
        for name in self.global_settings:
            values[name] = getattr(config, name)
        if self.heavy:
            values["network_precision"] = network_precision()[0]  # [gtforge] precision
        return json.loads(cache.canonical_json(values))

    @property
    def network_precision(self) -> Precision:
        """How this stage's networks run: [gtforge] precision and channels_last, resolved."""
        from pipeline.train.precision import Precision

        return Precision(*network_precision())

    def input_stages(self) -> dict[str, Stage]:
        """requires() as a name -> stage mapping."""
        req = self.requires()
        if isinstance(req, dict):
            return dict(req)
        if isinstance(req, Stage):
            return {"input": req}
        return {f"input{i}": r for i, r in enumerate(req or [])}

    def fingerprint(self) -> dict[str, Any]:
        """Extra facts that decide the output but are not parameters (e.g. an input folder)."""
        return {}

    def provenance(self) -> dict[str, Any]:
        """How this stage's output was made, for the shard set's record: stage, key, code
        version, resolved settings and the fingerprint facts (a recipe, a weight file's hash)."""
        return {"stage": self.get_task_family(), "key": self.key, "version": self.version,
                "settings": self.settings, "facts": self.fingerprint()}

    @cached_property
    def key(self) -> str:
        params = {**self.settings, **self.fingerprint()}
        inputs = {name: stage.key for name, stage in self.input_stages().items()}
        return cache.stage_key(self.get_task_family(), self.version, params, inputs)

    @property
    def stage_root(self) -> Path:
        return Path(gtforge().workdir) / self.get_task_family()

    @property
    def out_dir(self) -> Path:
        return self.stage_root / self.key

    @property
    def partial_dir(self) -> Path:
        return self.stage_root / f"{cache.PARTIAL_PREFIX}{self.key}"

    def output(self) -> StageTarget:
        return StageTarget(str(self.out_dir))

    def input_dir(self, name: str = "input") -> Path:
        return self.input_stages()[name].out_dir

    def seed_for(self, *item: object) -> int:
        """Seed for one random draw: derived from this stage's key and the item."""
        return derive_seed(self.key, *item)

    def show_progress(self, percent: float, message: str) -> None:
        """Progress to luigid (the visualiser's bar and status message)."""
        # luigi sets these callbacks only inside a worker.
        if self.set_progress_percentage:
            self.set_progress_percentage(round(percent, 1))
        if self.set_status_message:
            self.set_status_message(message)

    def progress(self, items, total: int, desc: str | None = None):
        return track(items, total, desc or self.get_task_family(), on_progress=self.show_progress)

    def run(self) -> None:
        started = time.time()
        self.set_up_runtime()
        if self.partial_dir.exists() and not self.resumable:
            shutil.rmtree(self.partial_dir)
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        try:
            info = self.build(self.partial_dir) or {}
        finally:
            release_free_memory()  # a worker process runs many tasks: don't keep their heaps
        cache.publish(self.partial_dir, self.out_dir, {
            "stage": self.get_task_family(), "key": self.key, "version": self.version,
            "params": self.settings, "fingerprint": self.fingerprint(),
            "inputs": {n: {"stage": s.get_task_family(), "key": s.key}
                       for n, s in self.input_stages().items()},
            "seconds": round(time.time() - started, 3), "info": info,
        })

    def set_up_runtime(self) -> None:
        """Process-wide settings of a stage that runs networks: torch threads ([gtforge]
        threads) for a heavy stage, the IQA weights folder ([gtforge] iqa_weights) for one
        that uses pyiqa. torch is imported only then."""
        config = gtforge()
        if self.heavy and config.threads:
            import torch

            torch.set_num_threads(config.threads)
        if self.uses_iqa and config.iqa_weights:
            from pipeline.quality import iqa

            iqa.use_weights_dir(Path(config.iqa_weights))

    def build(self, out: Path) -> dict[str, Any] | None:
        raise NotImplementedError
