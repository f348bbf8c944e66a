import json

import pytest
import torch
import torch.nn.functional as F

from models.elan import ELAN, GMSA, shift_channels
from models.rcan import RCAN
from models.unet_discriminator import UNetDiscriminator
from pipeline.train.enhancer import build_generator
from tasks.config import section


def _tiny(backbone):
    return json.loads(section("tiny.TrainEnhancer")[backbone])


def _randomise_tail(model):
    torch.nn.init.normal_(model.tail.weight, std=0.1)  # the tail starts at zero


@pytest.mark.parametrize("backbone", ["rcan", "elan"])
@pytest.mark.parametrize("hw", [(1, 1), (7, 9), (37, 61), (48, 48), (50, 17)])
def test_any_size_in_gives_the_same_size_out(backbone, hw):
    torch.manual_seed(0)
    model = build_generator(backbone, _tiny(backbone)).eval()
    _randomise_tail(model)
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.equal(y, x)


@pytest.mark.parametrize("backbone", ["rcan", "elan"])
def test_an_untrained_generator_is_the_identity(backbone):
    model = build_generator(backbone, _tiny(backbone)).eval()
    x = torch.rand(1, 3, 20, 27)
    with torch.no_grad():
        assert torch.equal(model(x), x)


def test_elan_pads_to_a_multiple_of_its_windows_and_crops_back():
    torch.manual_seed(0)
    model = ELAN(channels=12, blocks=2, windows=(4, 8)).eval()
    _randomise_tail(model)
    x = torch.rand(1, 3, 21, 30)  # padded to 24 x 32 inside
    padded = F.pad(x, (0, 2, 0, 3), mode="reflect")
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded)[..., :21, :30], atol=1e-6)


def test_shift_channels_is_elans_fixed_depthwise_conv():
    x = torch.rand(2, 10, 6, 7)
    weight = torch.zeros(10, 1, 3, 3)
    weight[0:2, 0, 1, 2] = weight[2:4, 0, 1, 0] = 1  # left, right (two channels per group)
    weight[4:6, 0, 2, 1] = weight[6:8, 0, 0, 1] = 1  # up, down
    weight[8:, 0, 1, 1] = 1  # unchanged
    assert torch.equal(shift_channels(x), F.conv2d(x, weight, padding=1, groups=10))


def test_gmsa_attends_inside_windows_and_shifted_blocks_move_them():
    torch.manual_seed(0)
    x = torch.rand(1, 6, 16, 16)
    poked = x.clone()
    poked[..., 5, 5] += 1.0  # inside window rows/cols 4..7 of a 4x4 grid
    for shift, window in [(False, (slice(4, 8), slice(4, 8))), (True, (slice(2, 6), slice(2, 6)))]:
        gmsa = GMSA(channels=6, windows=(4, 4, 4), shift=shift).eval()
        with torch.no_grad():
            changed = (gmsa(poked) - gmsa(x)).abs().sum(1)[0] > 0
        expected = torch.zeros(16, 16, dtype=torch.bool)
        expected[window] = True
        assert torch.equal(changed, expected), f"shift={shift}"


def test_paper_sizes():
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    rcan_arch = pytest.importorskip("basicsr.archs.rcan_arch")
    # The same network as BasicSR's RCAN with 20 blocks per group and no upsampler.
    assert n(RCAN()) == n(rcan_arch.RCAN(3, 3, num_block=20, upscale=1))
    # ELAN-x4 has 8.31 M parameters; without its x4 tail (180 -> 48 channels) 8.24 M.
    tail_x4 = 180 * 48 * 9 + 48 - (180 * 3 * 9 + 3)
    assert abs(n(ELAN()) + tail_x4 - 8.31e6) < 0.01e6


def test_unet_discriminator_gives_a_logit_per_pixel_with_spectral_norm():
    torch.manual_seed(0)
    d = UNetDiscriminator(n_feats=8)
    assert d(torch.rand(2, 3, 24, 40)).shape == (2, 1, 24, 40)
    with pytest.raises(ValueError, match="divisible by 8"):
        d(torch.rand(1, 3, 20, 24))
    with torch.no_grad():
        for _ in range(30):  # power iterations converge
            d(torch.rand(1, 3, 16, 16))
        for conv in (*d.down, *d.up, *d.extra):
            sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
            assert abs(float(sigma) - 1) < 0.05
