"""The caching core: keys, atomic publishing, and what reruns when something changes."""

import json
import os
from pathlib import Path

import luigi
import pytest

from pipeline.store import cache, durable
from tasks.base import Stage
from tests.conftest import run_tasks

RUNS: list[str] = []


class CacheSource(Stage):
    level = luigi.IntParameter(default=1)

    def requires(self):
        return []

    def build(self, out):
        RUNS.append("source")
        (out / "value.txt").write_text(str(self.level))


class CacheMiddle(Stage):
    factor = luigi.IntParameter(default=2)

    def requires(self):
        return {"source": CacheSource()}

    def build(self, out):
        RUNS.append("middle")
        value = int((self.input_dir("source") / "value.txt").read_text())
        (out / "value.txt").write_text(str(value * self.factor))


class CacheSink(Stage):
    def requires(self):
        return {"middle": CacheMiddle()}

    def build(self, out):
        RUNS.append("sink")
        (out / "value.txt").write_text((self.input_dir("middle") / "value.txt").read_text())


class CacheBroken(Stage):
    def requires(self):
        return []

    def build(self, out):
        (out / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("killed half-way")


@pytest.fixture
def runs(build_env):
    RUNS.clear()
    return RUNS


def test_rerun_with_nothing_changed_runs_nothing(runs):
    run_tasks(CacheSink())
    assert runs == ["source", "middle", "sink"]
    runs.clear()
    run_tasks(CacheSink())
    assert runs == []


def test_parameter_change_reruns_that_stage_and_downstream_only(runs, build_env):
    run_tasks(CacheSink())
    first = CacheSink().key
    runs.clear()
    build_env.set("CacheMiddle", "factor", 3)
    sink = CacheSink()
    assert sink.key != first
    run_tasks(sink)
    assert runs == ["middle", "sink"]
    assert (sink.out_dir / "value.txt").read_text() == "3"


def test_upstream_change_moves_every_downstream_key(build_env):
    before = {t: t().key for t in (CacheSource, CacheMiddle, CacheSink)}
    build_env.set("CacheSource", "level", 5)
    after = {t: t().key for t in (CacheSource, CacheMiddle, CacheSink)}
    assert all(before[t] != after[t] for t in before)


def test_seed_and_version_are_part_of_the_key(build_env, monkeypatch):
    base = CacheSource().key
    build_env.set("gtforge", "seed", 7)
    assert CacheSource().key != base
    build_env.set("gtforge", "seed", 0)
    monkeypatch.setattr(CacheSource, "version", 2)
    assert CacheSource().key != base


def test_small_preset_reads_its_own_sections_then_tinys_then_papers(build_env):
    from tasks.train_enhancer import TrainEnhancer

    build_env.set("tiny.TrainEnhancer", "crop", 40)
    build_env.set("small.TrainEnhancer", "iterations", 900)
    build_env.set("small.TrainEnhancer.elan", "iterations", 90)
    tiny_key = TrainEnhancer(backbone="rcan", degradation="blur").key
    build_env.set("gtforge", "preset", "small")
    rcan = TrainEnhancer(backbone="rcan", degradation="blur")
    elan = TrainEnhancer(backbone="elan", degradation="blur")
    assert rcan.resolved("iterations") == 900 and elan.resolved("iterations") == 90
    assert rcan.resolved("crop") == elan.resolved("crop") == 40  # from [tiny.TrainEnhancer]
    assert rcan.resolved("lr") == 0.001 and rcan.resolved("batch_size") == 4  # tiny's
    assert rcan.resolved("perceptual_layers")["conv5_4"] == 1.0  # from [paper.TrainEnhancer]
    assert rcan.key != tiny_key


def test_manifest_lists_files_with_hashes(runs):
    task = CacheSink()
    run_tasks(task)
    manifest = cache.read_manifest(task.out_dir)
    assert manifest["key"] == task.key and manifest["stage"] == "CacheSink"
    assert manifest["inputs"]["middle"]["key"] == CacheMiddle().key
    [entry] = manifest["files"]
    assert entry["sha256"] == durable.sha256_file(task.out_dir / "value.txt")
    assert manifest["versions"]["torch"]


def test_failed_stage_leaves_nothing_that_looks_complete(build_env):
    task = CacheBroken()
    result = luigi.build([task], local_scheduler=True, detailed_summary=True)
    assert result.status.name == "FAILED"
    assert not task.complete() and not task.out_dir.exists()
    assert not cache.is_complete(task.partial_dir)


def test_canonical_json_ignores_key_order():
    left = cache.canonical_json({"b": 1, "a": [1, 2]})
    assert left == cache.canonical_json({"a": (1, 2), "b": 1})
    assert json.loads(cache.canonical_json({"a": 1}))["a"] == 1


def test_default_build_has_every_candidate_and_tests_can_drop_them(build_env):
    from tasks.candidates import candidate_stages
    from tasks.config import DEFAULTS, ENHANCER_CANDIDATES, FUSED

    packaged = luigi.configuration.LuigiConfigParser(interpolation=None)
    packaged.read(DEFAULTS)
    assert packaged.get("gtforge", "candidates").split(",") == [*ENHANCER_CANDIDATES, FUSED]
    assert candidate_stages() == {}                      # build_env: the original only
    build_env.set("gtforge", "candidates", "elan_blur, fused")
    assert list(candidate_stages()) == ["elan_blur", "fused"]


def test_publish_syncs_every_file_before_the_manifest_and_the_rename(tmp_path, monkeypatch):
    partial, final = tmp_path / ".partial-k", tmp_path / "k"
    (partial / "images").mkdir(parents=True)
    (partial / "images" / "a.png").write_bytes(b"a")
    (partial / "b.json").write_text("{}")
    events: list[tuple[str, str]] = []
    real_fsync, real_dir, real_rename = os.fsync, durable.fsync_dir, os.rename
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(
        ("fsync", os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1])), real_fsync(fd))[1])
    monkeypatch.setattr(durable, "fsync_dir", lambda p: (events.append(("dir", Path(p).name)),
                                                          real_dir(p))[1])
    monkeypatch.setattr(os, "rename", lambda a, b: (events.append(("rename", Path(b).name)),
                                                    real_rename(a, b))[1])
    cache.publish(partial, final, {"stage": "X"})
    assert cache.is_complete(final)
    manifest = next(i for i, e in enumerate(events) if e[0] == "fsync" and "manifest" in e[1])
    assert {("fsync", "a.png"), ("fsync", "b.json"), ("dir", "images")} <= set(events[:manifest])
    assert events[-3:-1] == [("rename", "k"), ("dir", tmp_path.name)]  # the new name, synced
