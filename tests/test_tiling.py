import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.elan import ELAN
from pipeline.image.conversions import to_images, to_tensor
from pipeline.train.precision import Precision
from pipeline.train.tiling import spans, tile_outputs, tiled_apply


def _conv_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 3, 3, padding=1)).eval()


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _whole(net, rgb):
    with torch.no_grad():
        return net(to_tensor(rgb))


def _tiled_float(net, rgb, tile, overlap, **kw):
    """The float output of tile_outputs assembled (for comparisons only)."""
    out = None
    with torch.no_grad():
        for (rows, cols), kept in tile_outputs(net, rgb, tile, overlap, **kw):
            if out is None:
                scale = kw.get("scale", 1) / kw.get("reduce", 1)
                out = torch.full((3, round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)),
                                 float("nan"))
            out[:, rows, cols] = kept
    return out


def test_one_tile_equals_whole_image():
    net = _conv_net()
    x = _image(40, 56)
    np.testing.assert_array_equal(tiled_apply(net, x, tile=64, overlap=8),
                                  to_images(_whole(net, x))[0])


def test_overlapping_tiles_match_whole_image_for_a_local_operator():
    net = _conv_net()  # receptive radius 2: overlap 8 hides every tile border
    x = _image(100, 130)
    whole = _whole(net, x)[0]
    tiled = _tiled_float(net, x, 48, 16, batch=3)
    assert not torch.isnan(tiled).any()  # every pixel written once
    assert (tiled - whole).abs().max() < 1e-5
    out = tiled_apply(net, x, tile=48, overlap=16, batch=5)
    assert out.shape == x.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - to_images(whole)).max() <= 1  # rounding ties only


def test_all_tiles_have_one_size_and_cuts_lie_in_the_overlaps():
    for length, tile, overlap, align in ((1000, 256, 64, 1), (1008, 256, 96, 16), (50, 64, 8, 1)):
        found = spans(length, tile, overlap, align)
        size = min(tile, length)
        assert found[0].keep0 == 0 and found[-1].keep1 == length
        assert all(a.keep1 == b.keep0 for a, b in zip(found, found[1:], strict=False))
        for s in found:
            assert s.start % align == 0 and 0 <= s.start <= length - size
            inner0 = s.keep0 - s.start if s.keep0 else overlap // 2
            inner1 = s.start + size - s.keep1 if s.keep1 < length else overlap // 2
            assert min(inner0, inner1) >= overlap // 2 - align  # margin to inner tile edges


def test_scale_reduce_and_odd_sizes():
    up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
    x = _image(37, 61)
    out = tiled_apply(up, x, tile=16, overlap=4, scale=2)
    assert out.shape == (74, 122, 3)
    np.testing.assert_array_equal(out, x.repeat(2, 0).repeat(2, 1))
    # x3 up, then 3x3 block means: the input back, cut points on multiples of 3
    up3 = lambda t: F.interpolate(t, scale_factor=3, mode="nearest")  # noqa: E731
    np.testing.assert_array_equal(tiled_apply(up3, x, tile=16, overlap=6, scale=3, reduce=3), x)
    with pytest.raises(ValueError, match="multiple"):
        tiled_apply(up, x, tile=16, overlap=4, scale=2, reduce=4)


def test_precision_runs_the_forward_passes():
    net = _conv_net()
    x = _image(64, 80)
    out = tiled_apply(net, x, tile=32, overlap=8, precision=Precision("bf16"))
    assert np.abs(out.astype(int) - to_images(_whole(net, x))[0]).max() <= 4


def test_elan_tiles_match_the_whole_image_without_wrapped_windows():
    """A small random ELAN whose shifted windows cross tile edges: tiles start on its window
    grid and the shift does not wrap, so tiled equals whole up to the receptive field the
    overlap leaves out (2 blocks: about 2 x 17 px, under the 48 px margin)."""
    torch.manual_seed(0)
    net = ELAN(channels=12, blocks=2, windows=(4, 8, 16)).eval()
    torch.nn.init.normal_(net.tail.weight, std=0.05)  # not the identity
    x = _image(150, 170, seed=3)
    whole = _whole(net, x)[0]
    tiled = _tiled_float(net, x, 128, 96, align=net.multiple, batch=2)
    assert (whole - to_tensor(x)[0]).abs().mean() > 0.01  # the net does something
    assert not torch.isnan(tiled).any()
    assert (tiled - whole).abs().max() < 1e-4
