import math

import cv2
import numpy as np
import pytest
import torch

from models.rrdb import RRDBNet
from pipeline.image.conversions import to_tensor, to_uint8
from pipeline.image.ingest import read_images
from pipeline.store.imageio import image_path, read_rgb
from pipeline.train import sr
from tasks.super_resolve import SuperResolveGT
from tasks.train_sr import LoadSR, TrainSR
from tests.conftest import assert_setting_moves_key, run_tasks

SMALL = {"num_feat": 8, "num_block": 2, "num_grow_ch": 4}


def _write_realesrgan(path, scale=4, wrap="params_ema", seed=0):
    torch.manual_seed(seed)
    model = RRDBNet(scale=scale, **SMALL).eval()
    state = model.state_dict()
    torch.save({wrap: state} if wrap else state, path)
    return model


@pytest.mark.parametrize("wrap", ["params_ema", "params", None])
def test_loads_a_realesrgan_format_state_dict(tmp_path, wrap):
    reference = _write_realesrgan(tmp_path / "net.pth", wrap=wrap)
    state = reference.state_dict()
    for key in ("conv_first.weight", "body.1.rdb3.conv5.weight", "conv_body.bias",
                "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.bias"):
        assert key in state
    model = sr.load_rrdb(tmp_path / "net.pth")
    assert sr.rrdb_config(state) == {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, **SMALL}
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, reference(x))
    assert out.shape == (1, 3, 36, 44)


def test_x2_state_dict_unshuffles_odd_sizes(tmp_path):
    _write_realesrgan(tmp_path / "x2.pth", scale=2)
    model = sr.load_rrdb(tmp_path / "x2.pth")
    assert model.scale == 2 and model.conv_first.in_channels == 12
    with torch.no_grad():
        assert model(torch.rand(1, 3, 9, 10)).shape == (1, 3, 18, 20)


def test_bad_weight_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        sr.load_rrdb(tmp_path / "missing.pth")
    torch.save({"params": {"fc.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth.*conv_first"):
        sr.load_rrdb(tmp_path / "other.pth")
    state = RRDBNet(**SMALL).state_dict()
    state.pop("conv_hr.bias")
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="(?s)partial.pth.*conv_hr.bias"):
        sr.load_rrdb(tmp_path / "partial.pth")


class Nearest(torch.nn.Module):
    """A stand-in x4 'SR model': nearest-neighbour enlargement."""

    scale = 4

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")


def test_super_resolve_resizes_back_to_the_gt_size():
    gt = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    # x4 with a x4 model: the GT goes in unchanged and INTER_AREA undoes nearest exactly.
    np.testing.assert_array_equal(sr.super_resolve(Nearest(), gt, 4, tile=16, overlap=4), gt)
    yy, xx = np.mgrid[0:37, 0:50]
    ramp = np.stack([yy * 6, xx * 5, (yy + xx) * 2], -1).astype(np.uint8)  # smooth
    for scale in (2, 3):
        out = sr.super_resolve(Nearest(), ramp, scale, tile=16, overlap=4)
        assert out.shape == ramp.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - ramp).mean() < 3  # a smooth image survives the trip


def _small_corpus(tmp_path, sample_corpus, size=(208, 200)):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("chelsea.png", "coffee.png"):
        image = cv2.imread(str(sample_corpus / name))
        cv2.imwrite(str(folder / name), image[:size[0], :size[1]])
    return folder


def test_load_sr_and_super_resolve_gt(build_env, sample_corpus, tmp_path):
    build_env.set("gtforge", "input_dir", _small_corpus(tmp_path, sample_corpus))
    _write_realesrgan(tmp_path / "net.pth")
    build_env.set("paper.SuperResolveGT", "sr_checkpoint", tmp_path / "net.pth")
    task = SuperResolveGT(scale=3)
    assert isinstance(task.requires()["sr"], LoadSR)
    run_tasks(task)
    hr_dir = task.input_dir("hr")
    for img in read_images(hr_dir):
        out = read_rgb(image_path(task.out_dir, img.id))
        assert out.shape == read_rgb(image_path(hr_dir, img.id)).shape


def test_keys_follow_each_setting(build_env, tmp_path):
    for name, value in [("iterations", 7), ("batch_size", 3), ("crop", 16), ("lr", 0.01),
                        ("model", '{"num_feat": 4, "num_block": 1, "num_grow_ch": 4}')]:
        assert_setting_moves_key(build_env, TrainSR, "TrainSR", name, value)
    base = TrainSR().key
    build_env.set("TrainSR", "ckpt_every", 3)  # the result does not depend on it
    assert TrainSR().key == base
    sr_base = {s: SuperResolveGT(scale=s).key for s in (2, 3, 4)}
    assert len(set(sr_base.values())) == 3
    for name, value in [("tile", 64), ("overlap", 8)]:
        build_env.set("SuperResolveGT", name, value)
        assert SuperResolveGT(scale=2).key != sr_base[2], name
        sr_base[2] = SuperResolveGT(scale=2).key
    _write_realesrgan(tmp_path / "a.pth", seed=0)
    _write_realesrgan(tmp_path / "b.pth", seed=1)
    (tmp_path / "a_copy.pth").write_bytes((tmp_path / "a.pth").read_bytes())
    keys = {}
    for name in ("a", "a_copy", "b"):
        build_env.set("SuperResolveGT", "sr_checkpoint", tmp_path / f"{name}.pth")
        keys[name] = SuperResolveGT(scale=2).key
    assert keys["a"] == keys["a_copy"] != keys["b"] and keys["a"] != sr_base[2]
    build_env.set("SuperResolveGT", "sr_checkpoint", tmp_path / "none.pth")
    with pytest.raises(FileNotFoundError, match="none.pth"):
        SuperResolveGT(scale=2).key  # noqa: B018


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_super_resolve_tile_by_tile_equals_the_whole_photo(scale):
    """A small random RRDBNet (receptive radius about 20 input pixels): the tiled variant,
    brought back by s x s block means tile by tile, equals the model run on the whole
    (padded, resized) photo and resized back with INTER_AREA, within rounding."""
    torch.manual_seed(0)
    model = RRDBNet(scale=4, num_feat=8, num_block=1, num_grow_ch=4).eval()
    gt = np.random.default_rng(scale).integers(0, 256, (75, 97, 3), dtype=np.uint8)
    tiled = sr.super_resolve(model, gt, scale, tile=40, overlap=32)
    q = 4 // math.gcd(4, scale)
    padded = cv2.copyMakeBorder(gt, 0, -75 % q, 0, -97 % q, cv2.BORDER_REFLECT_101)
    hp, wp = padded.shape[:2]
    x = padded if scale == 4 else cv2.resize(padded, (wp * scale // 4, hp * scale // 4),
                                             interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        y = model(to_tensor(x))[0].clamp(0, 1).permute(1, 2, 0).numpy()
    whole = to_uint8(cv2.resize(y, (wp, hp), interpolation=cv2.INTER_AREA)[:75, :97] * 255)
    assert tiled.shape == gt.shape
    assert np.abs(tiled.astype(int) - whole).max() <= 1
