"""Shard format v1: writer, manifest, verification, summary, lazy reader."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.shards.reader import ShardSet
from pipeline.shards.spec import ShardError, read_manifest, summary
from pipeline.shards.verify import verify
from pipeline.shards.writer import ShardWriter
from pipeline.store import durable

PATCH, SCALE = 16, 4


SOURCES = ["a/photo one.png", "b/ünïcode.jpg"]


def synthetic(n: int, k: int, m: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random sample arrays: n samples, k candidates, m metrics."""
    r = np.random.default_rng(seed)
    lr = PATCH // SCALE
    return {"gt_original": r.integers(0, 256, (n, PATCH, PATCH, 3), np.uint8),
            "gt_candidates": r.integers(0, 256, (n, k, PATCH, PATCH, 3), np.uint8),
            "labels": r.integers(-1, 2, (n, k)).astype(np.int8),
            "vote_counts": r.integers(0, 4, (n, k, 3)).astype(np.uint8),
            "scores": r.normal(size=(n, k + 1, m)).astype(np.float32),
            "lq": r.integers(0, 256, (n, lr, lr, 3), np.uint8),
            "lq_vqvae": r.integers(0, 256, (n, lr, lr, 3), np.uint8)}


def make_shards(out: Path, n: int = 7, k: int = 2, m: int = 3, per_shard: int = 3,
                compression: str | None = None, seed: int = 0,
                sources: list[str] = SOURCES) -> dict[str, np.ndarray]:
    """Write `n` synthetic samples into `out`; returns the arrays written. Metric 0 is
    lower-better and NR, metric 1 FR, the rest pairwise."""
    data = synthetic(n, k, m, seed)
    names, metrics = [f"cand{i}" for i in range(k)], [f"metric{i}" for i in range(m)]
    modes = ["NR", "FR", *["pairwise"] * m][:m]
    with ShardWriter(out, samples_per_shard=per_shard, patch_size=PATCH, scale=SCALE,
                     candidate_names=names, metric_names=metrics, compression=compression,
                     params={"seed": seed}, sources=sources,
                     metric_lower_better=[i == 0 for i in range(m)], metric_modes=modes,
                     candidate_margins=candidate_margins(k, m),
                     candidate_negative_margins=negative_margins(k, m),
                     provenance={"stages": {"FuseGT": {"settings": {"c": 0.3}}}},
                     manifest_extra={"inputs": {"entries": 3, "built": 2, "rejected": 1}}) as w:
        for i in range(n):
            w.add(**{key: v[i] for key, v in data.items()}, image_id=f"{i:016x}",
                  x=4 * i, y=8, source_index=i % 2)
    return data


def candidate_margins(k: int, m: int) -> np.ndarray:
    """(K,M) margins: metric 0's differ per candidate, the others are shared."""
    margins = np.full((k, m), 0.5, np.float32)
    margins[:, :1] = np.arange(1, k + 1)[:, None]
    return margins


def negative_margins(k: int, m: int) -> np.ndarray:
    """(K,M) margins of a Negative vote: those of a Positive one but for metric 2's (0.75)."""
    margins = candidate_margins(k, m)
    margins[:, 2:3] = 0.75
    return margins


def read_plain(out: Path) -> dict[str, np.ndarray]:
    """Every per-sample dataset of every shard, concatenated, with nothing but h5py."""
    manifest = json.loads((out / "manifest.json").read_text())
    parts: dict[str, list] = {}
    for entry in manifest["shards"]:
        with h5py.File(out / entry["file"], "r") as f:
            for name in ("gt_original", "gt_candidates", "labels", "vote_counts", "scores", "lq",
                         "lq_vqvae", "meta"):
                parts.setdefault(name, []).append(f[name][:])
    return {name: np.concatenate(v) for name, v in parts.items()}


@pytest.mark.parametrize("compression", [None, "lzf", "gzip"])
def test_round_trip_through_plain_h5py(tmp_path, compression):
    data = make_shards(tmp_path, compression=compression)
    verify(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [s["samples"] for s in manifest["shards"]] == [3, 3, 1]
    assert [s["file"] for s in manifest["shards"]] == [f"shard-0000{i}.h5" for i in range(3)]
    assert manifest["samples"] == 7 and manifest["format_version"] == 2
    assert manifest["format_minor_version"] == 1 and manifest["inputs"]["rejected"] == 1
    assert manifest["sources"] == ["a/photo one.png", "b/ünïcode.jpg"]
    assert manifest["metric_modes"] == ["NR", "FR", "pairwise"]
    assert manifest["candidate_margins"] == {"cand0": [1.0, 0.5, 0.5], "cand1": [2.0, 0.5, 0.5]}
    assert manifest["candidate_negative_margins"] == {"cand0": [1.0, 0.5, 0.75],
                                                      "cand1": [2.0, 0.5, 0.75]}
    assert manifest["metric_margins"] == [None, 0.5, None]  # metric 2: one margin per sign
    assert manifest["provenance"]["stages"]["FuseGT"]["settings"]["c"] == 0.3
    back = read_plain(tmp_path)
    for name, value in data.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    assert [m.decode() for m in back["meta"]["image_id"]] == [f"{i:016x}" for i in range(7)]
    assert back["meta"]["x"].tolist() == [4 * i for i in range(7)]
    assert back["meta"]["source_index"].tolist() == [i % 2 for i in range(7)]
    with h5py.File(tmp_path / "shard-00002.h5", "r") as f:
        assert f.attrs["format"] == b"gtforge-shards" and f.attrs["format_version"] == 2
        assert f.attrs["scale"] == SCALE and json.loads(f.attrs["params"]) == {"seed": 0}
        assert [n.decode() for n in f["gt_candidates"].attrs["candidate_names"]] == \
            ["cand0", "cand1"]
        assert [n.decode() for n in f["scores"].attrs["metric_names"]] == \
            ["metric0", "metric1", "metric2"]
        assert f["scores"].attrs["metric_lower_better"].tolist() == [1, 0, 0]
        assert [m.decode() for m in f["scores"].attrs["metric_modes"]] == manifest["metric_modes"]
        assert [c.decode() for c in f["vote_counts"].attrs["columns"]] == \
            ["negative", "similar", "positive"]
        assert f.attrs["format_minor_version"] == 1
        np.testing.assert_array_equal(f["scores"].attrs["candidate_margins"],
                                      candidate_margins(2, 3))
        np.testing.assert_array_equal(f["scores"].attrs["candidate_negative_margins"],
                                      negative_margins(2, 3))
        # one margin per metric where every candidate shared it, for both signs
        np.testing.assert_array_equal(f["scores"].attrs["metric_margins"], [np.nan, 0.5, np.nan])
        assert json.loads(f.attrs["provenance"]) == manifest["provenance"]
        assert [s.decode() for s in f["sources"][:]] == manifest["sources"]
        assert f["gt_original"].chunks == (1, PATCH, PATCH, 3)
        assert f["gt_candidates"].chunks == (1, 1, PATCH, PATCH, 3)
        assert f["gt_original"].compression == compression
        for name in ("gt_original", "gt_candidates", "labels", "scores", "lq", "meta"):
            assert f[name].dtype.kind not in "OV" or f[name].dtype.names, name
    counts = manifest["label_counts"]["cand1"]
    assert counts["positive"] == int((data["labels"][:, 1] == 1).sum())
    assert sum(counts.values()) == 7


def test_last_partial_shard_holds_no_empty_chunks(tmp_path):
    make_shards(tmp_path / "seven", n=7, per_shard=3)
    make_shards(tmp_path / "one", n=1, per_shard=1)
    last = tmp_path / "seven" / "shard-00002.h5"
    with h5py.File(last, "r") as f:
        for name in ("gt_original", "gt_candidates", "lq", "lq_vqvae"):
            assert f[name].id.get_num_chunks() == int(np.prod(f[name].shape[:-3])), name
    one = (tmp_path / "one" / "shard-00000.h5").stat().st_size
    assert abs(last.stat().st_size - one) < 4096          # a one-sample shard, metadata aside
    assert last.stat().st_size < (tmp_path / "seven" / "shard-00000.h5").stat().st_size
    assert not list((tmp_path / "seven").glob(".*"))      # no temporary file left


def test_no_candidates_and_no_metrics(tmp_path):
    data = make_shards(tmp_path, n=4, k=0, m=0, per_shard=4)
    verify(tmp_path)
    with h5py.File(tmp_path / "shard-00000.h5", "r") as f:
        assert f["gt_candidates"].shape == (4, 0, PATCH, PATCH, 3)
        assert f["labels"].shape == (4, 0) and f["scores"].shape == (4, 1, 0)
        assert len(f["gt_candidates"].attrs["candidate_names"]) == 0
        np.testing.assert_array_equal(f["gt_original"][:], data["gt_original"])
    info = summary(tmp_path)
    assert info["candidates"] == [] and info["samples"] == 4 and info["shards"] == 1


def test_empty_set_has_a_manifest_and_no_shards(tmp_path):
    make_shards(tmp_path, n=0)
    verify(tmp_path)
    assert summary(tmp_path)["samples"] == 0 and not list(tmp_path.glob("*.h5"))


def test_same_samples_give_byte_identical_shards(tmp_path):
    make_shards(tmp_path / "a")
    make_shards(tmp_path / "b")
    make_shards(tmp_path / "c", seed=1)
    digest = {d: [s["sha256"] for s in read_manifest(tmp_path / d)["shards"]]
              for d in "abc"}
    assert digest["a"] == digest["b"] != digest["c"]
    assert digest["a"][0] == durable.sha256_file(tmp_path / "a" / "shard-00000.h5")


def test_summary_reports_the_set(tmp_path):
    make_shards(tmp_path)
    info = summary(tmp_path)
    assert info["shards"] == 3 and info["samples"] == 7
    assert info["gt_size"] == [PATCH, PATCH] and info["lq_size"] == [PATCH // SCALE] * 2
    assert info["candidates"] == ["cand0", "cand1"] and len(info["metrics"]) == 3
    assert info["bytes"] == sum(p.stat().st_size for p in tmp_path.glob("shard-*.h5"))
    assert set(info["label_counts"]["cand0"]) == {"negative", "similar", "positive"}


def _rewrite(path: Path, edit) -> None:
    with h5py.File(path, "r+") as f:
        edit(f)


def _rehash(out: Path) -> None:
    """Make the manifest's sha256 match the files again (to reach the schema checks)."""
    manifest = json.loads((out / "manifest.json").read_text())
    for s in manifest["shards"]:
        s["sha256"] = durable.sha256_file(out / s["file"])
    (out / "manifest.json").write_text(json.dumps(manifest))


def _corrupt_byte(out: Path) -> None:
    path = out / "shard-00001.h5"
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))


def _wrong_labels(out: Path) -> None:
    _rewrite(out / "shard-00001.h5", lambda f: f["labels"].__setitem__(0, [2, 0]))
    _rehash(out)


def _wrong_count(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][1]["samples"] = 4
    (out / "manifest.json").write_text(json.dumps(manifest))


def _missing_dataset(out: Path) -> None:
    _rewrite(out / "shard-00001.h5", lambda f: f.__delitem__("lq_vqvae"))
    _rehash(out)


def _renamed_candidate(out: Path) -> None:
    _rewrite(out / "shard-00001.h5", lambda f: f["gt_candidates"].attrs.__setitem__(
        "candidate_names", np.array([b"cand0", b"other"])))
    _rehash(out)


@pytest.mark.parametrize("damage, message", [
    (_corrupt_byte, "shard-00001.h5: sha256"),
    (lambda out: (out / "shard-00001.h5").unlink(), "shard-00001.h5: missing"),
    (lambda out: (out / "shard-00000.h5").rename(out / "shard-00009.h5"),
     "shard-00000.h5: missing"),
    (lambda out: (out / "shard-00003.h5").write_bytes(b""),
     "shard-00003.h5: shard file not listed"),
    (_wrong_labels, "shard-00001.h5: labels hold values"),
    (_wrong_count, "shard-00001.h5: gt_original has shape (3,"),
    (_missing_dataset, "shard-00001.h5: dataset lq_vqvae is missing"),
    (_renamed_candidate, "shard-00001.h5: gt_candidates.attrs['candidate_names']"),
    (lambda out: (out / "manifest.json").unlink(), "no manifest"),
])
def test_verify_names_the_first_bad_shard(tmp_path, damage, message):
    make_shards(tmp_path)
    damage(tmp_path)
    with pytest.raises(ShardError, match=message.replace("(", r"\(").replace("[", r"\[")):
        verify(tmp_path)


def test_verify_rejects_another_format_version(tmp_path):
    make_shards(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["format_version"] = 3
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="format_version 3"):
        verify(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"gt_original": np.zeros((8, 8, 3), np.uint8)}, "gt_original has shape"),
    ({"lq": np.zeros((4, 4, 3), np.float32)}, "lq is float32, expected uint8"),
    ({"labels": np.array([1, 3], np.int8)}, "labels must be -1, 0 or \\+1"),
    ({"scores": np.zeros((2, 3), np.float32)}, "scores has shape"),
    ({"image_id": "x" * 17}, "longer than 16 bytes"),
    ({"source_index": 2}, "source_index 2 outside"),
])
def test_writer_rejects_bad_samples_and_leaves_no_set(tmp_path, change, message):
    sample = {key: v[0] for key, v in synthetic(1, 2, 3).items()}
    sample.update(image_id="id", x=0, y=0, source_index=0)
    sample.update(change)
    with pytest.raises(ValueError, match=message):
        with ShardWriter(tmp_path, samples_per_shard=2, patch_size=PATCH, scale=SCALE,
                         candidate_names=["a", "b"], metric_names=["m", "n", "o"],
                         compression=None, params={}, sources=["s0", "s1"]) as w:
            w.add(**{key: v[0] for key, v in synthetic(1, 2, 3).items()}, image_id="ok",
                  x=0, y=0, source_index=0)
            w.add(**sample)
    assert not (tmp_path / "manifest.json").exists()
    assert not list(tmp_path.glob("shard-*")) and not list(tmp_path.glob(".shard-*"))


def test_writer_clears_a_previous_set(tmp_path):
    make_shards(tmp_path, n=7, per_shard=2)
    make_shards(tmp_path, n=3, per_shard=3)
    verify(tmp_path)
    assert len(list(tmp_path.glob("shard-*.h5"))) == 1


def test_shard_set_reads_samples_and_chunks_directly(tmp_path):
    for compression in (None, "gzip", "lzf"):
        out = tmp_path / str(compression)
        data = make_shards(out, compression=compression)
        reader = ShardSet(out)
        assert len(reader) == 7 and reader.locate(6) == (2, 0)
        for i in (0, 4, 6):
            shard = reader.shard(reader.locate(i)[0])
            n = reader.locate(i)[1]
            np.testing.assert_array_equal(shard.image("gt_original", n), data["gt_original"][i])
            np.testing.assert_array_equal(shard.image("gt_candidates", n, 1),
                                          data["gt_candidates"][i, 1])
            np.testing.assert_array_equal(shard.image("lq_vqvae", n), data["lq_vqvae"][i])
            np.testing.assert_array_equal(shard.labels[n], data["labels"][i])
        expected = {None: "raw", "gzip": "gzip", "lzf": None}[compression]
        assert shard.direct["gt_original"] == expected
        mapped = shard.image("gt_candidates", 0, 1)
        assert (shard.map is not None and np.shares_memory(mapped, shard.map)) == \
            (compression is None)
        assert mapped.flags.writeable == (compression == "lzf")   # views of the file: read-only
        with pytest.raises(IndexError):
            reader.locate(7)


def _child_reads(reader: ShardSet, queue) -> None:
    queue.put(reader.shard(1).image("gt_original", 2).tobytes())


def test_reader_reopens_files_after_fork(tmp_path):
    data = make_shards(tmp_path)
    reader = ShardSet(tmp_path, max_open=2)
    reader.shard(0).image("gt_original", 0)   # handles open in the parent before the fork
    reader.shard(1).image("gt_original", 0)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_reads, args=(reader, queue))
    child.start()
    got = queue.get(timeout=30)
    child.join(timeout=30)
    assert got == data["gt_original"][5].tobytes()
    assert reader._pid == os.getpid() and len(reader._open) == 2
    reader.shard(2)                           # max_open=2: the oldest handle is closed
    assert list(reader._open) == [1, 2]


def test_the_plain_h5py_example_in_the_docs_runs(tmp_path):
    make_shards(tmp_path, n=5, k=2, m=1, per_shard=2)
    doc = (Path(__file__).parents[1] / "docs" / "SHARDS.md").read_text()
    code = doc.split("## Reading with plain h5py")[1].split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(code.replace('Path("data/out/demo")', f"Path({str(tmp_path)!r})"), scope)
    assert scope["source"] in ("a/photo one.png", "b/ünïcode.jpg")
    assert scope["target"].shape == (PATCH, PATCH, 3) and scope["names"] == ["cand0", "cand1"]


def test_a_source_name_that_is_not_utf8_keeps_its_bytes(tmp_path):
    odd = os.fsdecode(b"photos/caf\xe9.png")  # written by a Latin-1 system
    make_shards(tmp_path, sources=[odd, "plain.png"])
    verify(tmp_path)
    with h5py.File(tmp_path / "shard-00000.h5", "r") as f:
        assert f["sources"][0] == b"photos/caf\xe9.png"
    assert os.fsencode(read_manifest(tmp_path)["sources"][0]) == b"photos/caf\xe9.png"


def _as_version_1_0(out: Path) -> None:
    """Rewrite a set as the code before minor versions wrote it (version 1, no vote_counts, no
    metric attributes, no provenance, no minor version; one shared list of sources)."""
    for path in out.glob("shard-*.h5"):
        with h5py.File(path, "r+") as f:
            f.attrs["format_version"] = np.int32(1)
            del f["vote_counts"]
            for name in ("format_minor_version", "provenance"):
                del f.attrs[name]
            for name in ("metric_lower_better", "metric_modes", "metric_margins",
                         "candidate_margins", "candidate_negative_margins"):
                del f["scores"].attrs[name]
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("format_minor_version", "provenance", "metric_modes", "metric_lower_better",
                "metric_margins", "candidate_margins", "candidate_negative_margins", "inputs"):
        del manifest[key]
    manifest["format_version"] = 1
    for entry in manifest["shards"]:
        del entry["sources"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    _rehash(out)


def test_readers_of_2_0_read_a_1_0_set(tmp_path):
    from pipeline.shards.dataset import ShardDataset

    data = make_shards(tmp_path)
    _as_version_1_0(tmp_path)
    verify(tmp_path)
    assert summary(tmp_path)["format_version"] == "1.0"
    reader = ShardSet(tmp_path)
    assert reader.shard(0).vote_counts is None
    np.testing.assert_array_equal(reader.shard(1).labels, data["labels"][3:6])
    assert ShardDataset(tmp_path, crop=8)[0]["gt"].shape == (3, 8, 8)


def test_vote_counts_round_trip(tmp_path):
    data = make_shards(tmp_path)
    reader = ShardSet(tmp_path)
    np.testing.assert_array_equal(reader.shard(2).vote_counts, data["vote_counts"][6:])


def test_shards_are_durable_before_the_manifest_names_them(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    for name in ("fsync_file", "fsync_dir"):
        real = getattr(durable, name)
        monkeypatch.setattr(durable, name, lambda p, real=real, name=name: (
            events.append((name, Path(p).name)), real(p))[1])
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (
        events.append(("rename", Path(b).name)), real_replace(a, b))[1])
    make_shards(tmp_path / "set")
    renames = []
    for shard in ("shard-00000.h5", "shard-00001.h5", "shard-00002.h5"):
        renames.append(events.index(("rename", shard)))
        synced = [i for i, (kind, name) in enumerate(events)
                  if kind == "fsync_file" and name.startswith(f".{shard}.")]  # .tmp or .compact
        assert synced and synced[0] < renames[-1]                             # data, then name
    manifest = events.index(("rename", "manifest.json"))
    assert ("fsync_dir", "set") in events[max(renames):manifest]  # the shards' names first
    assert events[manifest + 1] == ("fsync_dir", "set")           # then the manifest's
