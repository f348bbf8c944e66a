import torch
import torch.nn.functional as F

from pipeline.image.tiling import tiled_apply


def _conv_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 3, 3, padding=1)).eval()


def test_one_tile_equals_whole_image():
    net = _conv_net()
    x = torch.rand(1, 3, 40, 56)
    assert torch.equal(tiled_apply(net, x, tile=64, overlap=8), net(x))


def test_overlapping_tiles_match_whole_image_for_a_local_operator():
    net = _conv_net()  # receptive field 5x5: overlap 8 hides every tile border
    x = torch.rand(1, 3, 100, 130)
    with torch.no_grad():
        whole = net(x)
    tiled = tiled_apply(net, x, tile=48, overlap=16)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 1e-5


def test_scale_and_odd_sizes():
    up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
    x = torch.rand(2, 3, 37, 61)
    out = tiled_apply(up, x, tile=16, overlap=4, scale=2)
    assert out.shape == (2, 3, 74, 122)
    assert torch.allclose(out, up(x), atol=1e-6)
