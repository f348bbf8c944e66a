import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from luigi.task_register import Register
from PIL import Image

from pipeline.image.ingest import read_images
from pipeline.image.patches import (
    block_size,
    finest_band,
    grid_positions,
    load_patches,
    luma,
    save_patches,
    texture_mask,
    window_stats,
)
from pipeline.store.imageio import image_path, read_rgb, write_rgb
from tasks import select_patches
from tasks.base import Stage
from tasks.ingest import IngestHR
from tasks.select_patches import SelectPatches
from tests.conftest import assert_setting_moves_key, run_tasks

PAPER_GRID = dict(crop=512, step=288, offset_max=[32, 64, 128], offset_thresholds=[1200, 2400],
                  jitter=16, align=4)
TINY_GRID = dict(crop=128, step=72, offset_max=[8, 16, 32], offset_thresholds=[1200, 2400],
                 jitter=4, align=4)


def _grid(h, w, seed, **kw):
    return grid_positions(h, w, rng=np.random.default_rng(seed), **kw)


@pytest.mark.parametrize("grid", [PAPER_GRID, TINY_GRID])
@pytest.mark.parametrize("h,w", [(1000, 1500), (2100, 1900), (2600, 3100), (300, 451)])
def test_grid_inside_aligned_overlap_and_deterministic(grid, h, w):
    crop = grid["crop"]
    for seed in range(5):
        pos = _grid(h, w, seed, **grid)
        assert pos.dtype == np.int64 and pos.shape[1] == 2
        assert len(pos) > 0 or min(h, w) < crop
        assert (pos >= 0).all() and (pos[:, 0] + crop <= h).all() and (pos[:, 1] + crop <= w).all()
        assert (pos % grid["align"] == 0).all()
        # any two crops share at most half a patch
        dy = np.maximum(crop - np.abs(pos[:, None, 0] - pos[None, :, 0]), 0)
        dx = np.maximum(crop - np.abs(pos[:, None, 1] - pos[None, :, 1]), 0)
        overlap = dy * dx
        np.fill_diagonal(overlap, 0)
        assert overlap.max(initial=0) <= crop * crop / 2
        np.testing.assert_array_equal(pos, _grid(h, w, seed, **grid))
    if min(h, w) >= crop:
        assert not np.array_equal(_grid(h, w, 0, **grid), _grid(h, w, 1, **grid))


@pytest.mark.parametrize("short,k", [(1000, 32), (1199, 32), (1200, 64), (2399, 64), (2400, 128)])
def test_start_offset_range_follows_the_short_side(short, k):
    grid = {**PAPER_GRID, "jitter": 0}
    offsets = set()
    for seed in range(300):
        pos = _grid(short, 3000, seed, **grid)  # the short side is the height
        oy, ox = pos[:, 0].min(), pos[:, 1].min()
        np.testing.assert_array_equal(np.unique(np.diff(np.unique(pos[:, 0]))), [288])
        offsets |= {int(oy), int(ox)}
    assert min(offsets) == 0 and max(offsets) == k
    assert all(o % 4 == 0 for o in offsets)


def test_jitter_range():
    grid = {**PAPER_GRID, "offset_max": [0, 0, 0]}
    moves = []
    for seed in range(20):
        pos = _grid(2000, 2000, seed, **grid)
        node = np.rint(pos / 288) * 288
        moves.append((pos - node)[(node > 0).all(axis=1)])  # the first row/column is clamped at 0
    moves = np.concatenate(moves)
    assert moves.min() == -16 and moves.max() == 16 and (moves % 4 == 0).all()


def test_grid_rejects_misaligned_sizes():
    with pytest.raises(ValueError, match="multiples of align"):
        _grid(600, 600, 0, **{**TINY_GRID, "step": 70})
    with pytest.raises(ValueError, match="one more value"):
        _grid(600, 600, 0, **{**TINY_GRID, "offset_max": [8, 16]})
    assert len(_grid(100, 600, 0, **TINY_GRID)) == 0  # smaller than a crop


@pytest.fixture(scope="module")
def photo(small_corpus):
    return read_rgb(small_corpus / "chelsea.png")  # 451x300


@pytest.mark.parametrize("crop,align,size", [
    (32, 1, None), (77, 1, None), (128, 1, None), (32, 4, None), (128, 4, None), (64, 16, None),
    (128, 4, (297, 449)), (32, 8, (150, 451)),  # odd sizes; block path with several strips
    (33, 3, (200, 451)),  # blocks that do not divide the strip height
])
def test_window_stats_equal_per_crop_computation(photo, crop, align, size):
    if size:
        photo = np.ascontiguousarray(photo[:size[0], :size[1]])
    grey = np.asarray(Image.fromarray(photo).convert("L"))  # HGGT's patch script
    h, w = grey.shape
    rng = np.random.default_rng(crop)
    pos = align * np.stack([rng.integers(0, (h - crop) // align + 1, 25),
                            rng.integers(0, (w - crop) // align + 1, 25)], 1)
    far = (np.array([h, w]) - crop) // align * align
    pos = np.vstack([pos, [[0, 0], far, [0, far[1]], [far[0], 0]]])
    assert block_size(crop, pos) == align  # integral images over align x align blocks
    std, lap_var = window_stats(photo, pos, crop, "laplacian_var")
    std2, band_std = window_stats(photo, pos, crop, "pyramid_std")
    grey_f = grey.astype(np.float32)
    band = grey_f - cv2.pyrUp(cv2.pyrDown(grey_f), dstsize=(w, h))
    for i, (y, x) in enumerate(pos):
        window = np.ascontiguousarray(grey[y:y + crop, x:x + crop])
        assert std[i] == pytest.approx(cv2.meanStdDev(window.astype(np.float32))[1][0, 0],
                                       rel=1e-6)
        assert std2[i] == std[i]
        assert lap_var[i] == pytest.approx(cv2.Laplacian(window, cv2.CV_8U).var(), rel=1e-6)
        assert band_std[i] == pytest.approx(np.std(band[y:y + crop, x:x + crop].astype(np.float64)),
                                            rel=1e-6)
    np.testing.assert_allclose(window_stats(grey, pos, crop)[1], lap_var, rtol=1e-6)  # grey


def test_pyramid_band_of_a_crop_differs_only_on_its_border(photo):
    grey = luma(photo)
    y, x, crop = 60, 120, 128  # even coordinates, as every grid position is
    alone = finest_band(np.ascontiguousarray(grey[y:y + crop, x:x + crop]))
    whole = finest_band(grey)[y:y + crop, x:x + crop]
    np.testing.assert_allclose(alone[4:-4, 4:-4], whole[4:-4, 4:-4], atol=1e-3)
    assert np.abs(alone - whole).max() > 0.1  # the border does differ


@pytest.mark.parametrize("measure,hf_min", [("laplacian_var", 30.0), ("pyramid_std", 2.0)])
def test_texture_test_keeps_texture_drops_flat_and_smooth(measure, hf_min):
    rng = np.random.default_rng(0)
    image = np.full((128, 768, 3), 128, np.uint8)  # three 256-wide parts, a window in each
    image[:, :256] += rng.integers(0, 3, (128, 256, 1), dtype=np.uint8)  # flat
    image[:, 256:512] = np.linspace(0, 255, 256).astype(np.uint8)[None, :, None]  # smooth ramp
    image[:, 512:] = rng.integers(0, 256, (128, 256, 3), dtype=np.uint8)  # texture
    pos = np.array([[0, 64], [0, 320], [0, 576]])
    std, hf = window_stats(image, pos, 128, measure)
    assert std[1] > 30 and hf[1] < hf_min  # the ramp fails on high frequencies only
    mask = texture_mask(image, pos, 128, std_min=30.0, hf_min=hf_min, hf_measure=measure)
    np.testing.assert_array_equal(mask, [False, False, True])


def test_patch_file_round_trip_and_bad_files(tmp_path):
    path = tmp_path / "patches.npz"
    save_patches(path, ["a" * 16, "b"], [4, 8], [12, 0], 128)
    p = load_patches(path)
    assert p["image_id"].dtype == np.dtype("<U16") and list(p["image_id"]) == ["a" * 16, "b"]
    assert p["x"].dtype == np.int32 and list(p["x"]) == [4, 8] and list(p["y"]) == [12, 0]
    assert p["size"] == 128 and isinstance(p["size"], int)
    with pytest.raises(ValueError, match="16 characters"):
        save_patches(path, ["c" * 17], [0], [0], 128)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        load_patches(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="missing image_id, y, size"):
        load_patches(tmp_path / "other.npz")


@pytest.mark.parametrize("name,value", [
    ("crop_size", 96), ("step", 64), ("offset_max", "[4, 8, 16]"),
    ("offset_thresholds", "[600, 2400]"), ("jitter", 8), ("std_min", 20.0), ("hf_min", 10.0),
    ("hf_measure", "pyramid_std"),
])
def test_each_setting_changes_the_key(build_env, name, value):
    assert_setting_moves_key(build_env, SelectPatches, "SelectPatches", name, value)


def test_scale_changes_the_key(build_env):
    base = SelectPatches().key
    build_env.set("gtforge", "scale", 2)
    assert SelectPatches().key != base


def _check_output(task):
    patches = load_patches(task.out_dir / "patches.npz")
    stats = json.loads((task.out_dir / "patch_stats.json").read_text())
    images = {img.id: img for img in read_images(task.input_dir("hr"))}
    assert patches["size"] == 128
    assert set(patches["image_id"]) <= set(images)
    for image_id, x, y in zip(patches["image_id"], patches["x"], patches["y"], strict=True):
        img = images[image_id]
        assert x % 4 == 0 and y % 4 == 0 and x + 128 <= img.width and y + 128 <= img.height
    assert stats["kept"] == len(patches["x"]) == sum(s["kept"] for s in stats["images"].values())
    return patches, stats


def test_stage_selects_textured_patches(build_env):
    task = SelectPatches()
    run_tasks(task)
    patches, stats = _check_output(task)
    assert 10 < stats["kept"] < stats["positions"]  # some flat crops are dropped
    for s in stats["images"].values():
        assert s["kept"] == s["passed"]["original"]


class NoiseCandidate(Stage):
    """A fake candidate GT: pure noise, so every window of it passes the texture test."""

    def requires(self):
        return IngestHR()

    def build(self, out: Path) -> None:
        (out / "images").mkdir()
        for img in read_images(self.input_dir()):
            rng = np.random.default_rng(self.seed_for(img.id))
            write_rgb(image_path(out, img.id),
                      rng.integers(0, 256, (img.height, img.width, 3), dtype=np.uint8))


def test_stage_keeps_a_patch_when_any_version_passes(build_env, monkeypatch):
    monkeypatch.setattr(select_patches, "candidate_stages",
                        lambda chunk=(): {"noise": NoiseCandidate()})
    Register.clear_instance_cache()
    task = SelectPatches()
    run_tasks(task)
    patches, stats = _check_output(task)
    s = task.settings
    sizes = {img.id: (img.height, img.width) for img in read_images(task.input_dir("hr"))}
    assert any(v["passed"]["original"] < v["positions"] for v in stats["images"].values())
    for image_id, v in stats["images"].items():
        assert v["passed"]["noise"] == v["kept"] == v["positions"]
        grid = grid_positions(*sizes[image_id], 128, s["step"], s["offset_max"],
                              s["offset_thresholds"], s["jitter"], 4,
                              np.random.default_rng(task.seed_for(image_id)))
        mine = patches["image_id"] == image_id
        np.testing.assert_array_equal(np.stack([patches["y"][mine], patches["x"][mine]], 1), grid)
