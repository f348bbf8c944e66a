"""Chunked builds: content-defined chunks, content keys, a pinned training set, and builds that
rerun only the chunks a change touches."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from luigi.task_register import Register

from pipeline.image.chunks import partition, sample
from pipeline.shards.verify import verify
from tasks import graph
from tasks.config import gtforge
from tasks.corpus import PhotoStage, corpus_chunks, forget_listings, listing, training_ids
from tasks.publish import BuildDataset
from tests.conftest import run_tasks
from tests.test_build import SHORT_TRAININGS

IDS = [hashlib.sha256(str(i).encode()).hexdigest()[:16] for i in range(500)]  # content ids


def test_chunks_average_chunk_photos_and_cover_every_id():
    chunks = partition(IDS, 8)
    assert sorted(i for c in chunks for i in c) == sorted(IDS)
    assert all(c == tuple(sorted(c)) for c in chunks)
    assert 500 / 8 / 2 < len(chunks) < 500 / 8 * 2
    assert partition(list(reversed(IDS)), 8) == chunks  # the order given does not matter
    assert partition(IDS, 1) == [(i,) for i in sorted(IDS)]
    with pytest.raises(ValueError, match="chunk_photos"):
        partition(IDS, 0)


def test_adding_or_removing_a_photo_changes_only_its_chunk():
    before = set(partition(IDS, 8))
    for new in ("0000000000000001", "0000001234567890", "ffffffffffffff00"):
        after = set(partition([*IDS, new], 8))
        # the chunk it fell in, now with it or split in two at it (which leaves the rest
        # alone when it comes first); every other chunk stays
        assert len(before - after) <= 1 and 1 <= len(after - before) <= 2
    for gone in IDS[::37]:
        after = set(partition([i for i in IDS if i != gone], 8))
        # its chunk without it (none when it was alone), or merged with the next
        assert 1 <= len(before - after) <= 2 and len(after - before) <= 1


def test_a_sample_is_seeded_by_content_alone():
    chosen = sample(IDS, 20, seed=0)
    assert len(chosen) == 20 and set(chosen) <= set(IDS) and chosen == sorted(chosen)
    assert sample(list(reversed(IDS)), 20, seed=0) == chosen  # the order given does not matter
    assert sample(IDS, 20, seed=1) != chosen
    assert sample(IDS, 0, seed=0) == sample(IDS, 600, seed=0) == sorted(IDS)
    grown = sample([*IDS, *(f"{i:016x}" for i in range(5))], 20, seed=0)
    assert len(set(chosen) - set(grown)) <= 5  # each new photo displaces at most one


def test_training_sample_picks_the_trainings_photos(build_env):
    from tasks.train_sr import TrainSR

    everything, every_key = training_ids(), TrainSR().key
    build_env.set("gtforge", "training_sample", 2)
    chosen = training_ids()
    assert TrainSR().key != every_key
    assert len(chosen) == 2 and set(chosen) < set(everything)
    trained_on = {i for stage in TrainSR().input_stages().values() for i in stage.photos}
    assert trained_on == set(chosen)
    build_env.set("gtforge", "seed", 1)
    assert training_ids() != chosen


def test_every_per_photo_stage_of_a_build_works_on_one_chunk(build_env):
    build_env.set("gtforge", "candidates", "rcan_blur,fused")
    build_env.set("gtforge", "chunk_photos", 1)  # a chunk per photo
    chunks = corpus_chunks()
    assert len(chunks) >= 2
    per_photo = [t for t in graph.walk(BuildDataset()) if isinstance(t, PhotoStage)]
    assert per_photo and all(t.chunk for t in per_photo)
    shards = [t for t in per_photo if t.get_task_family() == "WriteShards"]
    assert sorted(t.chunk for t in shards) == sorted(chunks)


def _folders(workdir: Path) -> set[tuple[str, str]]:
    """(stage, key) of every published stage folder of a workdir."""
    return {(p.parent.name, p.name) for p in workdir.glob("*/*")
            if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()}


def _shards(out: Path) -> dict[str, str]:
    """sha256 of every shard of a published set, by file name."""
    verify(out)
    return {s["file"]: s["sha256"]
            for s in json.loads((out / "manifest.json").read_text())["shards"]}


def _build() -> None:
    Register.clear_instance_cache()  # each build is a new run, in a new process
    forget_listings()
    run_tasks(BuildDataset())


@pytest.fixture
def chunked(build_env, sample_corpus, tmp_path):
    """Five sample photos in chunks of about 3, one enhancer, trainings cut short."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "coins.png", "camera.png"):
        shutil.copy2(sample_corpus / name, folder / name)
    build_env.set("gtforge", "input_dir", folder)
    build_env.set("gtforge", "candidates", "rcan_blur")
    build_env.set("gtforge", "chunk_photos", 3)
    for section, values in SHORT_TRAININGS.items():
        for key, value in values.items():
            build_env.set(section, key, value)
    return folder


@pytest.mark.slow
def test_same_photos_anywhere_give_the_same_shard_bytes(chunked, build_env, tmp_path):
    _build()
    first = _shards(tmp_path / "out")
    assert len({name.split("-")[1] for name in first}) >= 2  # shards of several chunks
    copy = shutil.copytree(chunked, tmp_path / "elsewhere", copy_function=shutil.copyfile)
    build_env.set("gtforge", "input_dir", copy)
    build_env.set("gtforge", "workdir", tmp_path / "work2")
    build_env.set("gtforge", "out_dir", tmp_path / "out2")
    _build()
    assert _shards(tmp_path / "out2") == first


@pytest.mark.slow
def test_adding_removing_and_renaming_photos_reruns_only_what_they_touch(
        chunked, sample_corpus, tmp_path):
    workdir, out = tmp_path / "work", tmp_path / "out"
    _build()
    trained = {f for f in _folders(workdir) if f[0].startswith("Train")}
    pinned = training_ids()

    def change(edit) -> tuple[set, int, dict, dict]:
        """What a rebuild after `edit()` made: new stage folders, how many chunks changed
        their photos, the shards before and after."""
        folders, shards, chunks = _folders(workdir), _shards(out), set(corpus_chunks())
        edit()
        _build()
        made = _folders(workdir) - folders
        assert {f[0] for f in made} <= {"IngestHR", "DegradeLR", "EnhanceHR", "VQVAEDegradeLR",
                                         "SelectPatches", "ScorePatches", "WriteShards",
                                         "WriteManifest", "Report"}  # no training reran
        return made, len(set(corpus_chunks()) - chunks), shards, _shards(out)

    made, touched, before, after = change(
        lambda: shutil.copy2(sample_corpus / "astronaut.png", chunked))
    assert 1 <= sum(f[0] == "IngestHR" for f in made) == touched <= 2
    kept = set(before) & set(after)
    assert kept and all(before[n] == after[n] for n in kept)  # untouched chunks: same bytes
    assert len(set(after) - set(before)) >= 1  # the new photo's chunk was written again

    made, touched, before, after = change(lambda: (chunked / "coins.png").unlink())
    assert sum(f[0] == "WriteShards" for f in made) == touched <= 1
    kept = set(before) & set(after)
    assert kept and all(before[n] == after[n] for n in kept)
    assert set(before) - set(after)

    made, touched, before, after = change(
        lambda: (chunked / "rocket.jpg").rename(chunked / "r2.jpg"))
    assert touched == 0
    assert {f[0] for f in made} == {"WriteShards", "WriteManifest", "Report"}
    assert sum(f[0] == "WriteShards" for f in made) == 1  # the chunk that holds the photo
    manifest = json.loads((out / "manifest.json").read_text())
    assert "r2.jpg" in manifest["sources"] and "rocket.jpg" not in manifest["sources"]

    assert {f for f in _folders(workdir) if f[0].startswith("Train")} == trained
    assert training_ids() == pinned and gtforge().training_set == ""


def test_chunk_photos_is_a_command_line_flag(build_env, monkeypatch):
    from luigi.cmdline_parser import CmdlineParser

    from tasks import cli

    seen = []

    def luigi_run(argv):  # what luigi's entry point was given, then a failed build's exit
        seen.append(argv)
        raise SystemExit(30)

    monkeypatch.setattr(cli, "run_with_retcodes", luigi_run)
    assert cli.main(["build", "--local-scheduler", "--chunk-photos", "1"]) == 30
    assert seen[0][seen[0].index("--gtforge-chunk-photos") + 1] == "1"
    with CmdlineParser.global_instance(["--module", "tasks", "BuildDataset", *seen[0][3:]]):
        assert gtforge().chunk_photos == 1 and len(corpus_chunks()) == 4  # a photo per chunk


def test_each_input_folder_pins_its_own_training_set(build_env, small_corpus, sample_corpus,
                                                     tmp_path):
    first = training_ids()
    assert sorted(first) == sorted(listing().photos)
    shutil.copy2(sample_corpus / "coins.png", tmp_path / "coins.png")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy2(sample_corpus / "moon.png", other / "moon.png")
    build_env.set("gtforge", "input_dir", other)
    assert training_ids() == sorted(listing().photos) != first
    shutil.copy2(sample_corpus / "coins.png", other / "coins.png")
    build_env.set("gtforge", "input_dir", other)  # a new run: the folder has grown
    assert len(listing().photos) == 2 and len(training_ids()) == 1  # pinned at its first build
    build_env.set("gtforge", "input_dir", small_corpus)
    assert training_ids() == first
