import math

import pytest
import torch

from pipeline.image.fusion import (
    fuse,
    fuse_half,
    fuse_logits,
    high_frequency_energy,
    mask_profile,
    masks_from_logits,
    radial_basis,
    radial_grid,
    ring_centres,
    ring_widths,
)

SIZES = [(16, 16), (15, 17), (24, 11)]


def literal(sources, masks):
    """The DESIGN formula, written out with complex FFTs and shifts over the spatial axes."""
    spectra = torch.fft.fftshift(torch.fft.fft2(sources, norm="ortho"), dim=(-2, -1))
    mixed = torch.fft.ifftshift((masks[:, :, None] * spectra).sum(1), dim=(-2, -1))
    return torch.fft.ifft2(mixed, norm="ortho")


def _sources(b=2, s=4, c=3, h=16, w=16, seed=0):
    return torch.rand(b, s, c, h, w, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("pick", [0, 1, 3])
def test_one_hot_masks_return_that_source(h, w, pick):
    src = _sources(h=h, w=w)
    masks = torch.zeros(2, 4, h, w, dtype=torch.float64)
    masks[:, pick] = 1  # pick = 0: a constant mask of 1 on the GT returns the GT
    torch.testing.assert_close(fuse(src, masks), src[:, pick], rtol=0, atol=1e-12)


def test_masks_from_logits_sum_to_one_and_gt_logits_return_gt():
    logits = torch.randn(3, 4, 25, dtype=torch.float64)
    masks = masks_from_logits(logits, 20, 13)
    assert masks.shape == (3, 4, 20, 13) and (masks > 0).all() and (masks < 1).all()
    torch.testing.assert_close(masks.sum(1), torch.ones(3, 20, 13, dtype=torch.float64))
    src = _sources(b=1, h=20, w=13)
    gt_wins = torch.zeros(1, 4, 25, dtype=torch.float64)
    gt_wins[:, 0] = 200.0  # every ring sum >> 0 for the GT: its mask is 1 to rounding
    torch.testing.assert_close(fuse_logits(src, gt_wins), src[:, 0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("h,w", SIZES)
def test_matches_the_literal_formula_for_any_mask(h, w):
    src = _sources(h=h, w=w)
    masks = torch.softmax(torch.randn(2, 4, h, w, dtype=torch.float64), 1)  # not radial
    torch.testing.assert_close(fuse(src, masks), literal(src, masks).real, rtol=0, atol=1e-12)


@pytest.mark.parametrize("h,w", SIZES)
def test_radial_masks_give_a_real_result(h, w):
    src = _sources(h=h, w=w)
    masks = masks_from_logits(torch.randn(2, 4, 25, dtype=torch.float64), h, w)
    out = literal(src, masks)
    assert out.imag.abs().max() < 1e-12  # real to rounding: the grid is centred on DC
    equal = torch.zeros(2, 4, 25, dtype=torch.float64)  # equal weights: the plain average
    torch.testing.assert_close(fuse_logits(src, equal), src.mean(1), rtol=0, atol=1e-12)


def test_half_bin_off_grid_would_not_be_real():
    """The reference code's grid (centre half a bin from DC): the check above would fail."""
    h = w = 16
    y = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    r = torch.sqrt(y[:, None] ** 2 + y[None, :] ** 2) / (h / 2)
    masks = torch.stack([torch.exp(-r ** 2 / 0.1), 1 - torch.exp(-r ** 2 / 0.1)])[None]
    assert literal(_sources(b=1, s=2, h=h, w=w), masks).imag.abs().max() > 1e-3


def test_batch_items_and_channels_stay_separate():
    src = _sources(b=3, h=12, w=18)
    masks = masks_from_logits(torch.randn(3, 4, 25, dtype=torch.float64), 12, 18)
    whole = fuse(src, masks)
    for b in range(3):
        torch.testing.assert_close(fuse(src[b:b + 1], masks[b:b + 1])[0], whole[b])
        for c in range(3):
            torch.testing.assert_close(fuse(src[b:b + 1, :, c:c + 1], masks[b:b + 1])[0, 0],
                                       whole[b, c])


def test_logits_path_equals_full_masks_and_is_differentiable():
    src = _sources(h=15, w=22)
    logits = torch.randn(2, 4, 25, dtype=torch.float64, requires_grad=True)
    fused = fuse_logits(src, logits)
    torch.testing.assert_close(fused, fuse(src, masks_from_logits(logits, 15, 22)))
    fused.square().mean().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_grid_is_centred_on_the_shifted_dc():
    for h, w in SIZES:
        r = radial_grid(h, w, dtype=torch.float64)
        assert r[h // 2, w // 2] == 0 and r.min() == 0 and (r > 0).sum() == h * w - 1
        spectrum = torch.fft.fftshift(torch.fft.fft2(torch.ones(h, w, dtype=torch.float64)))
        assert spectrum.abs().argmax() == (h // 2) * w + w // 2  # DC lands where r = 0
    assert radial_grid(16, 16)[0, 0] == pytest.approx(math.sqrt(2))


def test_rings_follow_the_design():
    c, w = ring_centres(25), ring_widths(25)
    assert c[0] == 0 and c[-1] == pytest.approx(math.sqrt(2))
    assert c[12] == pytest.approx(math.sqrt(2) / 4) and w[0] == pytest.approx(0.05)
    assert w[-1] == pytest.approx(0.55)
    basis = radial_basis(32, 32, 25, dtype=torch.float64)
    assert basis.shape == (25, 32, 32) and basis[0, 16, 16] == 1  # ring 0 peaks at DC
    profile = mask_profile(torch.randn(2, 4, 25), torch.linspace(0, 1.4, 9))
    torch.testing.assert_close(profile.sum(1), torch.ones(2, 9))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="B,S,C,H,W"):
        fuse(torch.rand(4, 3, 8, 8), torch.rand(4, 8, 8))
    with pytest.raises(ValueError, match="W//2"):
        fuse_half(torch.rand(1, 2, 3, 8, 8), torch.rand(1, 2, 8, 8))


def test_high_frequency_energy_sees_detail():
    smooth = torch.cos(torch.arange(64) * (2 * math.pi / 64))[None, :].expand(64, 64)
    noisy = smooth + 0.1 * torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    assert high_frequency_energy(noisy) > 100 * high_frequency_energy(smooth)


def test_logits_path_without_the_basis_cache(monkeypatch):
    import pipeline.image.fusion as fusion

    src = _sources(b=1, h=17, w=10)
    logits = torch.randn(1, 4, 25, dtype=torch.float64)
    cached = fuse_logits(src, logits)
    monkeypatch.setattr(fusion, "CACHE_LIMIT", 0)  # large images: chunked, not cached
    torch.testing.assert_close(fuse_logits(src, logits), cached, rtol=0, atol=1e-12)
    torch.testing.assert_close(cached, fuse(src, masks_from_logits(logits, 17, 10)))
