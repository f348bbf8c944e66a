import json

import numpy as np
import pytest
from luigi.task_register import Register
from PIL import Image

from pipeline import ingest
from tasks.ingest import IngestHR
from tests.conftest import run_tasks


def _save(path, array, **kw):
    Image.fromarray(array).save(path, **kw)
    return path


def test_decode_converts_modes_to_rgb8(tmp_path):
    grey16 = np.linspace(0, 65535, 200 * 200).astype(np.uint16).reshape(200, 200)
    path = _save(tmp_path / "g16.png", grey16)
    rgb = ingest.decode_hr(path, min_side=100, max_pixels=10**6)
    assert rgb.dtype == np.uint8 and rgb.shape == (200, 200, 3)
    assert rgb[..., 0].max() == 255 and rgb[100, 100, 0] == 128  # scaled, not clipped

    rgba = np.zeros((150, 150, 4), np.uint8)  # fully transparent black
    path = _save(tmp_path / "a.png", rgba)
    assert (ingest.decode_hr(path, 100, 10**6, alpha="composite") == 255).all()
    with pytest.raises(ingest.Rejected, match="alpha"):
        ingest.decode_hr(path, 100, 10**6, alpha="reject")


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((120, 200, 3), np.uint8))  # 200 wide, 120 high
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert ingest.decode_hr(tmp_path / "rot.jpg", 100, 10**6).shape == (200, 120, 3)


@pytest.mark.parametrize("name,content,reason", [
    ("empty.png", b"", "empty"),
    ("text.png", b"this is not an image", "not an image"),
])
def test_rejects_bad_bytes(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ingest.Rejected, match=reason):
        ingest.decode_hr(tmp_path / name, 100, 10**6)


def test_rejects_truncated_small_and_huge(tmp_path):
    full = _save(tmp_path / "full.png", np.random.default_rng(0).integers(
        0, 255, (300, 300, 3), dtype=np.uint8))
    (tmp_path / "cut.png").write_bytes(full.read_bytes()[:5000])
    with pytest.raises(ingest.Rejected, match="truncated"):
        ingest.decode_hr(tmp_path / "cut.png", 100, 10**6)
    with pytest.raises(ingest.Rejected, match="min_side"):
        ingest.decode_hr(full, 400, 10**6)
    with pytest.raises(ingest.Rejected, match="max_pixels"):
        ingest.decode_hr(full, 100, 300 * 300 - 1)


def test_ingest_stage_lists_every_reject(build_env, small_corpus, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in small_corpus.iterdir():
        (corpus / p.name).write_bytes(p.read_bytes())
    (corpus / "notes.png").write_text("not a picture")
    (corpus / "copy.png").write_bytes((small_corpus / "chelsea.png").read_bytes())
    build_env.set("gtforge", "input_dir", corpus)
    task = IngestHR()
    run_tasks(task)
    images = ingest.read_images(task.out_dir)
    rejects = {r["source"].rsplit("/", 1)[-1]: r["reason"]
               for r in ingest.read_rejects(task.out_dir)}
    assert len(images) == len(list(small_corpus.iterdir()))
    assert set(rejects) == {"notes.png", "copy.png"} or set(rejects) == {"notes.png", "chelsea.png"}
    assert any("duplicate" in r for r in rejects.values())
    manifest = json.loads((task.out_dir / "manifest.json").read_text())
    assert manifest["info"] == {"accepted": len(images), "rejected": 2}


@pytest.mark.parametrize("name,value",
                         [("min_side", 64), ("max_pixels", 10**6), ("alpha", "reject")])
def test_each_setting_changes_the_key(build_env, name, value):
    base = IngestHR().key
    build_env.set("IngestHR", name, value)
    assert IngestHR().key != base


def test_key_follows_folder_content_not_its_path(build_env, small_corpus, tmp_path):
    import shutil

    base = IngestHR().key
    moved = shutil.copytree(small_corpus, tmp_path / "moved", copy_function=shutil.copy2)
    build_env.set("gtforge", "input_dir", moved)
    assert IngestHR().key == base
    (moved / "chelsea.png").write_bytes((moved / "coffee.png").read_bytes())
    Register.clear_instance_cache()  # a new run is a new process
    assert IngestHR().key != base
