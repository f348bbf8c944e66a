"""Cache tools: list, invalidate (a stage and everything downstream), gc (dry run first), verify."""

import json
from pathlib import Path

import luigi
import pytest

from pipeline.store import cache
from tasks import cli, graph, stage_folders
from tasks.base import Stage
from tasks.config import gtforge
from tasks.publish import BuildDataset
from tests.conftest import run_tasks

RUNS: list[str] = []


class ToySource(Stage):
    level = luigi.IntParameter(default=1)

    def requires(self):
        return []

    def build(self, out):
        RUNS.append("ToySource")
        (out / "value.txt").write_text(str(self.level))


class ToyLeft(Stage):
    def requires(self):
        return {"source": ToySource()}

    def build(self, out):
        RUNS.append("ToyLeft")
        (out / "left.bin").write_bytes(b"L" * 3000)


class ToyRight(Stage):
    def requires(self):
        return {"source": ToySource()}

    def build(self, out):
        RUNS.append("ToyRight")
        (out / "nested").mkdir()
        (out / "nested" / "right.bin").write_bytes(b"R" * 500)


class ToySink(Stage):
    def requires(self):
        return {"left": ToyLeft(), "right": ToyRight()}

    def build(self, out):
        RUNS.append("ToySink")
        (out / "sink.txt").write_text(self.input_dir("left").name + self.input_dir("right").name)


class ToyPublish(luigi.Task):
    """Like PublishDataset: no key, a file in out_dir that names the key it holds."""

    def requires(self):
        return ToySink()

    def complete(self):
        path = Path(self.output().path)
        return path.is_file() and path.read_text() == self.requires().key

    def output(self):
        return luigi.LocalTarget(str(Path(gtforge().out_dir) / "published.txt"))

    def run(self):
        RUNS.append("ToyPublish")
        with self.output().open("w") as f:
            f.write(self.requires().key)


FAMILIES = ["ToySource", "ToyLeft", "ToyRight", "ToySink"]


@pytest.fixture
def runs(build_env):
    RUNS.clear()
    return RUNS


def ops(*argv: str) -> int:
    return cli.main([*argv, "--module", "tests.test_cache_tools", "--root", "ToyPublish"])


def test_walk_lists_each_task_once_inputs_first(runs):
    order = [t.get_task_family() for t in graph.walk(ToyPublish())]
    assert order[0] == "ToySource" and order[-2:] == ["ToySink", "ToyPublish"]
    assert sorted(order) == sorted([*FAMILIES, "ToyPublish"])  # the diamond's source once
    assert [t.get_task_family() for t in graph.downstream(ToyPublish(), "ToyRight")] == \
        ["ToyRight", "ToySink", "ToyPublish"]
    with pytest.raises(LookupError, match="ToySource"):  # names what the DAG has
        graph.downstream(ToyPublish(), "NoSuchStage")


def test_list_shows_every_key_path_state_and_size(runs, capsys):
    assert ops("cache", "list", "--json") == 0
    before = json.loads(capsys.readouterr().out)
    assert [r["family"] for r in before["stages"]] == FAMILIES
    assert {r["state"] for r in before["stages"]} == {"missing"}
    run_tasks(ToyPublish())
    assert ops("cache", "list", "--json") == 0
    listed = {r["family"]: r for r in json.loads(capsys.readouterr().out)["stages"]}
    for family, task in (("ToyLeft", ToyLeft()), ("ToyRight", ToyRight())):
        row = listed[family]
        assert row["key"] == task.key and Path(row["path"]) == task.out_dir
        assert row["state"] == "done"
        assert row["bytes"] == sum(p.stat().st_size for p in task.out_dir.rglob("*") if p.is_file())
    assert listed["ToyLeft"]["bytes"] > 3000
    assert ops("cache", "list") == 0
    table = capsys.readouterr().out
    assert ToySink().key in table and "4 stages, 4 done" in table


def test_invalidate_removes_the_stage_and_everything_downstream(runs, capsys):
    run_tasks(ToyPublish())
    kept = {t: t.out_dir for t in (ToySource(), ToyLeft())}
    gone = [ToyRight().out_dir, ToySink().out_dir, Path(ToyPublish().output().path)]
    assert ops("cache", "invalidate", "ToyRight", "--dry-run") == 0
    assert all(p.exists() for p in gone)
    assert ops("cache", "invalidate", "ToyRight") == 0
    out = capsys.readouterr().out
    assert not any(p.exists() for p in gone) and all(p.exists() for p in kept.values())
    assert "ToyPublish, ToyRight, ToySink" in out
    runs.clear()
    run_tasks(ToyPublish())
    assert sorted(runs) == ["ToyPublish", "ToyRight", "ToySink"]


def test_invalidate_removes_partial_folders_and_rejects_unknown_stages(runs, capsys):
    run_tasks(ToyPublish())
    partial = ToySink().partial_dir
    (partial / "ckpt").mkdir(parents=True)
    (partial / "ckpt" / "step-00000002.pt").write_bytes(b"old checkpoint")
    assert ops("cache", "invalidate", ToySink().key) == 0  # a key works as well as a name
    assert not partial.exists() and not ToySink().out_dir.exists()
    assert ops("cache", "invalidate", "Nope") == 2
    assert "no stage 'Nope'" in capsys.readouterr().err


def test_gc_deletes_only_unreferenced_keys_after_a_dry_run(runs, build_env, capsys):
    run_tasks(ToyPublish())
    old = {f: t.out_dir for f, t in zip(FAMILIES, (ToySource(), ToyLeft(), ToyRight(), ToySink()),
                                         strict=True)}
    build_env.set("ToySource", "level", 2)  # every key moves
    run_tasks(ToyPublish())
    current = {t.out_dir for t in (ToySource(), ToyLeft(), ToyRight(), ToySink())}
    assert not current & set(old.values())
    workdir = Path(gtforge().workdir)
    stale_partial = workdir / "ToyLeft" / ".partial-0123456789abcdef"
    stale_partial.mkdir()
    trash = workdir / "ToyLeft" / ".trash-0000000000000000-1"
    (trash / "x").mkdir(parents=True)
    notes = workdir / "ToyLeft" / "README.txt"  # not a key folder: never touched
    notes.write_text("mine")
    gone_stage = workdir / "OldStage" / "fedcba9876543210"  # a stage no longer configured
    gone_stage.mkdir(parents=True)

    assert ops("cache", "gc") == 0  # dry run by default
    out = capsys.readouterr().out
    expected = {*old.values(), stale_partial, trash, gone_stage}
    assert {Path(line.split()[2]) for line in out.splitlines() if line.startswith("would")} \
        == expected
    assert all(p.exists() for p in expected) and "nothing deleted" in out

    assert ops("cache", "gc", "--yes") == 0
    assert not any(p.exists() for p in expected)
    assert not (workdir / "OldStage").exists()  # emptied stage roots go too
    assert notes.read_text() == "mine" and all(p.exists() for p in current)
    assert stage_folders.unreferenced(ToyPublish()) == []
    runs.clear()
    run_tasks(ToyPublish())
    assert runs == []  # the current configuration lost nothing


def test_verify_finds_extra_changed_and_missing_files(runs, capsys):
    run_tasks(ToyPublish())
    assert ops("cache", "verify") == 0
    right = ToyRight().out_dir
    assert cache.verify_output(right) == []
    (right / ".left-over.tmp").write_bytes(b"half")
    (right / "nested" / "right.bin").write_bytes(b"X" * 500)  # same size, other bytes
    (ToyLeft().out_dir / "left.bin").unlink()
    problems = cache.verify_output(right) + cache.verify_output(ToyLeft().out_dir)
    assert any(".left-over.tmp is not in the manifest" in p for p in problems)
    assert any("nested/right.bin differs" in p for p in problems)
    assert any("left.bin is missing" in p for p in problems)
    assert ops("cache", "verify") == 1
    assert "3 problems" in capsys.readouterr().out


def test_remove_folder_makes_an_output_incomplete_before_deleting(runs, monkeypatch):
    run_tasks(ToySink())
    sink = ToySink()
    seen = []

    def watch(path, *a, **k):  # what exists at the moment the tree is deleted
        seen.append((sink.complete(), Path(path).name))
        return real(path, *a, **k)

    real = cache.shutil.rmtree
    monkeypatch.setattr(cache.shutil, "rmtree", watch)
    cache.remove_folder(sink.out_dir)
    assert seen and seen[0][0] is False and seen[0][1].startswith(cache.TRASH_PREFIX)


def test_the_build_dag_is_found_by_walking_it(build_env):
    """The real DAG, as configured: nothing built, no stage named in tasks/graph.py."""
    build_env.set("gtforge", "candidates", "rcan_noise,elan_blur,fused")
    root = BuildDataset()
    order = graph.walk(root)
    assert order[-1] is root and root.get_task_family() == "BuildDataset"
    assert graph.downstream(root, "IngestHR") == order  # everything starts from the photos
    after_shards = {t.get_task_family() for t in graph.downstream(root, "WriteShards")}
    assert after_shards == {"WriteShards", "WriteManifest", "Report", "PublishDataset",
                           "BuildDataset"}
    rows = stage_folders.stage_folders(root)
    assert len({r.key for r in rows}) == len({r.path for r in rows}) == len(rows)
    assert {"IngestHR", "SelectPatches", "ScorePatches", "WriteShards", "Report"} <= \
        {r.family for r in rows}
    assert stage_folders.unreferenced(root) == []
