"""The learned pairwise judge: its model, the pool it learns from, training and calibration."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from models.judge import PairJudge
from pipeline.quality import judge as J
from pipeline.store.imageio import read_rgb
from pipeline.train import judge as JT


@pytest.fixture(scope="module")
def photo(small_corpus):
    return read_rgb(small_corpus / "astronaut.png")


def test_judge_is_antisymmetric_and_zero_on_identical_images():
    torch.manual_seed(0)
    model = PairJudge(width=4).eval()
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(a, b), -model(b, a))
        assert model(a, a).abs().max() == 0
    assert model(a, b).shape == (2, len(J.HEADS))


def test_closeness_falls_with_the_damage(photo):
    clean = photo[100:164, 100:164]
    rng = np.random.default_rng(0)
    mild, strong = J.add_noise(clean, 3, False, rng), J.add_noise(clean, 12, False, rng)
    assert (J.closeness(clean, clean) == J.MAX_DB).all()
    assert (J.closeness(mild, clean) > J.closeness(strong, clean)).all()
    assert (J.closeness(J.blur(clean, 0.8), clean) > J.closeness(J.blur(clean, 2.0), clean)).all()


def brighten(x: np.ndarray) -> np.ndarray:
    """A version generator that always moves away from the base in PSNR."""
    return np.clip(x.astype(np.int16) + 40, 0, 255).astype(np.uint8)


def pool_of(bases: np.ndarray, generators, rng: np.random.Generator) -> JT.Pool:
    """The pool of `bases` with the outputs of `generators` (uint8 -> uint8) for its inputs."""
    inputs = JT.pool_inputs(bases, J.VersionRanges(), rng)
    return JT.build_pool(bases, inputs, [g(inputs) for g in generators], J.VersionRanges(), 4,
                         rng)


def test_pool_pairs_compare_the_input_with_what_was_made_from_it(photo):
    rng = np.random.default_rng(1)
    bases = JT.crop_bases([photo], 6, 40, (0.5, 1.0), rng)
    assert bases.shape == (6, 40, 40, 3) and bases.dtype == np.uint8

    pool = pool_of(bases, [brighten], rng)
    # the input, the generator's output for it, two processing steps of it
    assert pool.versions.shape == (6, 4, 32, 32, 3) and pool.closeness.shape == (6, 4, 3)
    np.testing.assert_array_equal(pool.versions[:, 1], brighten(pool.versions[:, 0]))
    assert (pool.closeness[:, 1, 0] < pool.closeness[:, 0, 0]).all()
    rows = np.array([1, 4])
    inputs = pool.versions[rows, 0]
    a, b, gain = pool.pairs(rng, 40, rows)
    assert a.shape == b.shape == (40, 32, 32, 3) and gain.shape == (40, 3)
    assert all(any((x == y).all() for y in inputs) for x in a)  # a is always an input
    assert not any((x == y).all() for y in inputs for x in b)
    a, b, gain = pool.every_pair(rows, generated=True)
    assert len(a) == 2
    np.testing.assert_array_equal(b, brighten(a))
    assert (gain[:, 0] < 0).all()
    a, b, gain = pool.every_pair(rows)
    assert len(a) == 6 and gain.shape == (6, 3)
    with pytest.raises(ValueError, match="no generator"):
        pool_of(bases, [], rng).every_pair(rows, generated=True)
    a, b, gain = JT.fresh_pairs([photo], 8, 24, 4, (0.5, 1.0), J.VersionRanges(), rng)
    assert a.shape == b.shape == (8, 24, 24, 3) and gain.shape == (8, 3)


def test_sr_versions_take_each_crop_at_one_drawn_scale():
    # crop n's variant k is the constant image 4 n + k
    level = 4 * np.arange(60)[:, None] + np.arange(3)
    variants = np.broadcast_to(level[..., None, None, None], (60, 3, 4, 4, 3)).astype(np.uint8)
    out = JT.sr_versions(variants, np.random.default_rng(0))
    assert out.shape == (60, 4, 4, 3)
    scale = out[:, 0, 0, 0] - 4 * np.arange(60)  # which variant each crop got
    assert set(scale) == {0, 1, 2}
    np.testing.assert_array_equal(out, variants[np.arange(60), scale])


def test_margins_are_calibrated_on_the_generators_outputs(photo):
    rng = np.random.default_rng(4)
    bases = JT.crop_bases([photo], 20, 40, (0.5, 1.0), rng)
    torch.manual_seed(0)
    model = PairJudge(width=4).eval()

    rows = np.arange(5)
    found = JT.calibration(model, pool_of(bases, [brighten], rng),
                           rows, 0.9)
    assert found["calibrated_on"] == {"pairs": 5, "kind": "generated"}
    assert found["heldout_pairs"] == 5 * 3 and set(found["margins"]) == set(J.HEADS)
    plain = JT.calibration(model, pool_of(bases, [], rng), rows, 0.9)
    assert plain["calibrated_on"] == {"pairs": 5 * 2, "kind": "all"}
    assert plain["candidate_margins"] == {}


def test_each_generator_gets_margins_from_its_own_outputs(photo):
    """A judge is more reliable on some kinds of candidate than on others: each generator's
    margins come from the held-out pairs of its own outputs alone."""
    class Brightness(torch.nn.Module):  # calls a brighter version better, by its brightness
        def forward(self, a, b):
            return 100 * (b - a).mean(dim=(1, 2, 3))[:, None].repeat(1, len(J.HEADS))

    rng = np.random.default_rng(5)
    bases = JT.crop_bases([photo], 40, 40, (0.5, 1.0), rng)
    model = Brightness()
    darken = lambda x: np.clip(x.astype(np.int16) - 12, 0, 255).astype(np.uint8)  # noqa: E731
    pool = pool_of(bases, [brighten, darken], rng)
    rows = np.arange(30)
    found = JT.calibration(model, pool, rows, 0.9, names=["bright", "dark"])
    a, b, gain = pool.every_pair(rows)
    predicted = J.judge(model, a, b[:, None])[:, 0]
    column = pool.every_index(rows)[1]
    for g, name in enumerate(["bright", "dark"]):
        own = J.calibrate(predicted[column == g + 1], gain[column == g + 1], 0.9)
        assert list(found["candidate_margins"][name].values()) == pytest.approx(own, abs=1e-4)
    # in PSNR, right about every darkened version (worse), wrong about every brightened one
    assert found["candidate_margins"]["dark"]["psnr"] == pytest.approx(0.1)
    assert found["candidate_margins"]["bright"]["psnr"] > 1.0
    with pytest.raises(ValueError, match="1 generator names"):
        JT.calibration(model, pool, rows, 0.9, names=["bright"])


def test_a_short_training_learns_which_version_is_closer(photo):
    """On pairs (noisy, clean-ish) the judge must learn to prefer the cleaner one."""
    rng = np.random.default_rng(2)
    torch.manual_seed(0)
    model = PairJudge(width=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def batch(n: int):
        bases = JT.crop_bases([photo], n, 32, (0.5, 1.0), rng)
        noisy = np.stack([J.add_noise(b, rng.uniform(4, 20), False, rng) for b in bases])
        flip = rng.uniform(size=n) < 0.5
        a = np.where(flip[:, None, None, None], bases, noisy)
        b = np.where(flip[:, None, None, None], noisy, bases)
        gain = np.array([J.closeness(y, z) - J.closeness(x, z)
                         for x, y, z in zip(a, b, bases, strict=True)])
        return a, b, gain

    losses = [JT.judge_step(model, opt, *batch(16)) for _ in range(60)]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    a, b, gain = batch(32)
    predicted = J.judge(model, a, b[:, None])[:, 0]
    assert np.mean(np.sign(predicted[:, 0]) == np.sign(gain[:, 0])) > 0.8  # chance: 0.5


def test_calibration_finds_the_margin_where_votes_are_right():
    rng = np.random.default_rng(3)
    gain = rng.normal(0, 2, (4000, 3))
    noise = rng.normal(0, 1, (4000, 3))
    predicted = gain + noise
    margins = J.calibrate(predicted, gain, precision=0.9)
    assert (margins > 0.1).all()
    for h, m in enumerate(margins):
        called = predicted[:, h] > m
        assert np.mean(gain[called, h] > 0.1) >= 0.9
    noisier = J.calibrate(gain + 3 * noise, gain, precision=0.9)
    assert (noisier > margins).all()  # a worse judge needs a larger margin


def test_gradient_magnitude_is_correctly_rounded():
    """cv2.magnitude rounds its SIMD lanes differently from its scalar tail, and which pixels
    fall in which depends on the array's address: the judge's training data, and every shard
    after it, changed from one run to the next. Integer grey levels make the gradients exact,
    so the magnitude must equal the float64 square root rounded once."""
    grey = cv2.cvtColor(skimage.data.astronaut()[100:164, 100:164],
                        cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = (cv2.Sobel(grey, cv2.CV_64F, dx, 1 - dx) for dx in (1, 0))
    exact = np.sqrt(gx ** 2 + gy ** 2).astype(np.float32)
    np.testing.assert_array_equal(J.gradient_magnitude(grey), exact)
