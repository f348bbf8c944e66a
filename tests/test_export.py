"""Export to PNG folders and BasicSR LMDBs."""

from __future__ import annotations

import csv
import os

import cv2
import lmdb
import numpy as np
import pytest

from pipeline.shards.export import export_folder, export_lmdb
from tests.test_shards import PATCH, SCALE, make_shards

KINDS = ["gt", "gt_cand0", "gt_cand1", "lq", "lq_vqvae"]
SOURCE = {"gt": "gt_original", "lq": "lq", "lq_vqvae": "lq_vqvae"}


def expected(data: dict, kind: str, i: int) -> np.ndarray:
    if kind.startswith("gt_cand"):
        return data["gt_candidates"][i, int(kind[-1])]
    return data[SOURCE[kind]][i]


def names(n: int = 7) -> list[str]:
    return [f"{i:07d}_{i:016x}_x{4 * i}_y8" for i in range(n)]


def test_folder_export_has_every_image_and_basicsr_meta_info(tmp_path):
    data = make_shards(tmp_path / "shards")
    info = export_folder(tmp_path / "shards", tmp_path / "out")
    assert info["samples"] == 7 and info["kinds"] == KINDS
    for kind in KINDS:
        folder = tmp_path / "out" / kind
        assert sorted(p.stem for p in folder.glob("*.png")) == names()
        for i, name in enumerate(names()):
            rgb = cv2.cvtColor(cv2.imread(str(folder / f"{name}.png")), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(rgb, expected(data, kind, i), err_msg=kind)
        side = PATCH if kind.startswith("gt") else PATCH // SCALE
        lines = (folder / "meta_info.txt").read_text().splitlines()
        assert lines == [f"{n}.png ({side},{side},3) 1" for n in names()]
    with open(tmp_path / "out" / "samples.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == names()
    assert [int(r["label_cand1"]) for r in rows] == data["labels"][:, 1].tolist()
    assert float(rows[3]["score_cand0_metric2"]) == pytest.approx(data["scores"][3, 1, 2], 1e-5)
    assert rows[1]["source"] == "b/ünïcode.jpg"
    assert not list(tmp_path.glob(".out*"))


def test_lmdb_export_reads_back_like_basicsr(tmp_path):
    data = make_shards(tmp_path / "shards")
    export_lmdb(tmp_path / "shards", tmp_path / "out", kinds=["gt_cand1", "lq"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["gt_cand1.lmdb", "lq.lmdb", "samples.csv"]
    for kind in ("gt_cand1", "lq"):
        folder = tmp_path / "out" / f"{kind}.lmdb"
        keys = [line.split(".")[0] for line in (folder / "meta_info.txt").read_text().splitlines()]
        assert keys == names()
        env = lmdb.open(str(folder), readonly=True, lock=False)
        with env.begin() as txn:
            for i, key in enumerate(keys):
                bgr = cv2.imdecode(np.frombuffer(txn.get(key.encode()), np.uint8),
                                   cv2.IMREAD_COLOR)
                np.testing.assert_array_equal(bgr[..., ::-1], expected(data, kind, i))
        env.close()


def test_exported_lmdb_feeds_basicsr_paired_dataset(tmp_path):
    basicsr_data = pytest.importorskip("basicsr.data.paired_image_dataset")
    data = make_shards(tmp_path / "shards")
    export_lmdb(tmp_path / "shards", tmp_path / "out", kinds=["gt", "lq"])
    ds = basicsr_data.PairedImageDataset({
        "dataroot_gt": str(tmp_path / "out" / "gt.lmdb"),
        "dataroot_lq": str(tmp_path / "out" / "lq.lmdb"),
        "io_backend": {"type": "lmdb"}, "phase": "val", "scale": SCALE})
    assert len(ds) == 7
    item = ds[2]
    assert item["gt_path"] == names()[2]
    np.testing.assert_allclose(item["gt"].numpy(), data["gt_original"][2].transpose(2, 0, 1) / 255,
                               atol=1e-6)


def test_export_refuses_a_non_empty_destination_and_unknown_kinds(tmp_path):
    make_shards(tmp_path / "shards")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        export_folder(tmp_path / "shards", tmp_path / "busy")
    with pytest.raises(ValueError, match="unknown image kinds \\['gt_nope'\\]"):
        export_lmdb(tmp_path / "shards", tmp_path / "new", kinds=["gt_nope"])


def test_export_writes_a_source_name_that_is_not_utf8_as_its_bytes(tmp_path):
    odd = os.fsdecode(b"caf\xe9.png")
    make_shards(tmp_path / "shards", sources=[odd, "plain.png"])
    export_folder(tmp_path / "shards", tmp_path / "out")
    raw = (tmp_path / "out" / "samples.csv").read_bytes()
    assert b",caf\xe9.png," in raw and b",plain.png," in raw
