import json
import os

import numpy as np
import pytest
from luigi.task_register import Register
from PIL import Image, ImageCms

from pipeline.image import ingest
from tasks.corpus import forget_listings, listing
from tasks.ingest import IngestHR
from tests.conftest import assert_setting_moves_key, run_tasks
from tests.icc import rgb_profile


def _save(path, array, **kw):
    Image.fromarray(array).save(path, **kw)
    return path


def test_decode_converts_modes_to_rgb8(tmp_path):
    grey16 = np.linspace(0, 65535, 200 * 200).astype(np.uint16).reshape(200, 200)
    path = _save(tmp_path / "g16.png", grey16)
    rgb = ingest.decode_hr(path, min_side=100, max_pixels=10**6).rgb
    assert rgb.dtype == np.uint8 and rgb.shape == (200, 200, 3)
    assert rgb[..., 0].max() == 255 and rgb[100, 100, 0] == 128  # scaled, not clipped

    rgba = np.zeros((150, 150, 4), np.uint8)  # fully transparent black
    path = _save(tmp_path / "a.png", rgba)
    assert (ingest.decode_hr(path, 100, 10**6, alpha="composite").rgb == 255).all()
    with pytest.raises(ingest.Rejected, match="alpha"):
        ingest.decode_hr(path, 100, 10**6, alpha="reject")


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((120, 200, 3), np.uint8))  # 200 wide, 120 high
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert ingest.decode_hr(tmp_path / "rot.jpg", 100, 10**6).rgb.shape == (200, 120, 3)


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
    found = listing()
    duplicates = {r["source"]: r["reason"] for r in found.rejects}
    unusable = {found.source(r["image_id"]): r["reason"] for r in task.rejects()}
    assert len(images) == len(list(small_corpus.iterdir()))
    assert list(duplicates) == ["copy.png"] and "duplicate of chelsea.png" in duplicates["copy.png"]
    assert list(unusable) == ["notes.png"] and "not an image" in unusable["notes.png"]
    manifest = json.loads((task.out_dir / "manifest.json").read_text())
    assert manifest["info"]["accepted"] == len(images) and manifest["info"]["rejected"] == 1
    assert manifest["info"]["photos"] == len(images) + 1


@pytest.mark.parametrize("name,value",
                         [("min_side", 64), ("max_pixels", 10**6), ("alpha", "reject")])
def test_each_setting_changes_the_key(build_env, name, value):
    assert_setting_moves_key(build_env, IngestHR, "IngestHR", name, value)


def _build_keys() -> list[tuple[str, str]]:
    """Family and key of every stage that makes the shards (WriteManifest and the Report
    record the input folder itself)."""
    from tasks.graph import stages
    from tasks.write_manifest import WriteManifest

    Register.clear_instance_cache()  # a new run is a new process
    forget_listings()
    return [(stage.get_task_family(), stage.key) for stage in stages(WriteManifest())
            if not isinstance(stage, WriteManifest)]


def test_same_photos_anywhere_give_the_same_keys(build_env, small_corpus, tmp_path):
    """Copied to another folder without their modification times (another host, a checkout),
    then touched: every stage of the build keeps its key, and so its seeds and bytes."""
    import shutil

    build_env.set("gtforge", "candidates", "rcan_blur,fused")
    before = _build_keys()
    copy = shutil.copytree(small_corpus, tmp_path / "copy", copy_function=shutil.copyfile)
    assert {p.stat().st_mtime_ns for p in copy.iterdir()} != \
        {p.stat().st_mtime_ns for p in small_corpus.iterdir()}
    build_env.set("gtforge", "input_dir", copy)
    assert _build_keys() == before
    for path in copy.iterdir():
        os.utime(path, ns=(1, 1))
    assert _build_keys() == before
    hashes = json.loads((tmp_path / "work" / "input-hashes.json").read_text())
    assert {row[1] for row in hashes.values()} >= {1}  # the touched files were hashed again


def test_key_follows_folder_content_not_its_path(build_env, small_corpus, tmp_path):
    import shutil

    base = IngestHR().key
    moved = shutil.copytree(small_corpus, tmp_path / "moved", copy_function=shutil.copy2)
    build_env.set("gtforge", "input_dir", moved)
    assert IngestHR().key == base
    (moved / "chelsea.png").write_bytes((moved / "coffee.png").read_bytes())
    Register.clear_instance_cache()  # a new run is a new process
    forget_listings()
    assert IngestHR().key != base


def _srgb_from_adobe(rgb):
    """Adobe RGB (1998) -> sRGB with the published D65 matrices (the expected answer)."""
    adobe_to_xyz = np.array([[0.5767309, 0.1855540, 0.1881852], [0.2973769, 0.6273491, 0.0752741],
                             [0.0270343, 0.0706872, 0.9911085]])
    xyz_to_srgb = np.array([[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560],
                            [0.0556434, -0.2040259, 1.0572252]])
    linear = (np.asarray(rgb, np.float64) / 255) ** (563 / 256) @ adobe_to_xyz.T @ xyz_to_srgb.T
    linear = np.clip(linear, 0, 1)
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.rint(encoded * 255)


def test_embedded_profile_is_converted_to_srgb(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(30, 225, (120, 120, 3), dtype=np.uint8)
    adobe = _save(tmp_path / "adobe.png", pixels, icc_profile=rgb_profile())
    photo = ingest.decode_hr(adobe, 100, 10**6)
    assert photo.converted_from == "Adobe RGB (1998)"
    assert np.abs(photo.rgb.astype(float) - _srgb_from_adobe(pixels)).max() <= 2
    assert np.abs(photo.rgb.astype(int) - pixels).mean() > 3  # the colours did move

    srgb = _save(tmp_path / "srgb.png", pixels,
                 icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    photo = ingest.decode_hr(srgb, 100, 10**6)
    assert photo.converted_from is None and (photo.rgb == pixels).all()


def awkward_folder(root, photos):
    """A folder with two photos (`photos`: their bytes; one has a name that is not UTF-8) and
    one entry of every awkward kind. Returns (folder, number of entries)."""
    root.mkdir()
    (root / "good.png").write_bytes(photos[0])
    (root / os.fsdecode(b"caf\xe9.png")).write_bytes(photos[1])
    os.symlink("loop_b.png", root / "loop_a.png")
    os.symlink("loop_a.png", root / "loop_b.png")
    os.symlink("gone.png", root / "dangling.png")
    os.symlink("good.png", root / "link_to_good.png")  # a link to a photo: built (a duplicate)
    (root / "folder.png").mkdir()  # a directory named like an image: walked into
    (root / "folder.png" / "inner.txt").write_text("not a photo")
    (root / "empty.jpg").mkdir()
    os.symlink("folder.png", root / "link_to_folder")
    locked = root / "locked.png"
    locked.write_bytes(b"not readable")
    locked.chmod(0)
    os.mkfifo(root / "pipe.png")
    (root / ".hidden.png").write_bytes(photos[0])
    return root, 12  # every entry above; a walked folder counts by what it holds


def test_every_awkward_entry_is_built_or_listed(build_env, small_corpus, tmp_path):
    folder, entries = awkward_folder(tmp_path / "awkward", [
        (small_corpus / name).read_bytes() for name in ("chelsea.png", "coffee.png")])
    found = ingest.walk_inputs(folder)
    assert len(found) == entries
    problems = {os.fsencode(e.path.relative_to(folder)): e.problem for e in found}
    assert "loop" in problems[b"loop_a.png"] and "loop" in problems[b"loop_b.png"]
    assert "dangling" in problems[b"dangling.png"]
    assert "FIFO" in problems[b"pipe.png"] and "hidden" in problems[b".hidden.png"]
    assert "empty folder" in problems[b"empty.jpg"] and "folder" in problems[b"link_to_folder"]
    assert problems[b"caf\xe9.png"] is None and problems[b"link_to_good.png"] is None

    build_env.set("gtforge", "input_dir", folder)
    task = IngestHR()
    run_tasks(task)
    found = listing()
    images, unusable = ingest.read_images(task.out_dir), task.rejects()
    assert len(images) + len(unusable) + len(found.rejects) == entries
    info = json.loads((task.out_dir / "manifest.json").read_text())["info"]
    assert info["photos"] == len(found.photos) and info["accepted"] == len(images) == 2
    stored = {os.fsencode(r["source"]) for r in found.rejects} | \
        {os.fsencode(found.source(r["image_id"])) for r in unusable} | \
        {os.fsencode(found.source(i.id)) for i in images}
    assert b"caf\xe9.png" in stored  # bytes kept exactly
