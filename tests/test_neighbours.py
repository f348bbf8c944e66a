"""The neighbours annotator: its statistics, its table of pool pairs and their margins."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.quality import judge as J
from pipeline.quality import neighbours as NB
from pipeline.store.imageio import read_rgb
from pipeline.train import judge as JT
from tests.test_judge import pool_of


@pytest.fixture(scope="module")
def photo(small_corpus):
    return read_rgb(small_corpus / "astronaut.png")


def test_statistics_see_noise_blur_and_what_a_candidate_did(photo):
    crop = photo[100:228, 100:228]
    rng = np.random.default_rng(0)
    noisy, soft = J.add_noise(crop, 8, False, rng), J.blur(crop, 1.5)
    clean_stats, noisy_stats = NB.statistics(crop, crop), NB.statistics(noisy, noisy)
    assert noisy_stats[0] > clean_stats[0] + 0.5  # noise level (log grey levels)
    assert NB.statistics(soft, soft)[2] < clean_stats[2] - 0.5  # detail at the finest scale
    assert clean_stats[4] == 0 and clean_stats[3] == pytest.approx(np.log(0.1) - clean_stats[0])
    sharper, smoother = NB.statistics(soft, crop), NB.statistics(crop, soft)
    assert sharper[4] > 0 > smoother[4] and sharper[3] > clean_stats[3]


def test_a_candidate_is_read_off_its_own_generators_nearest_pairs():
    """The net share of the k nearest pairs that gained (more than the floor) minus the share
    that lost: a large loss counts as one loss, not as its size."""
    stats = {"a": np.array([[0.0] * 5, [10.0] * 5, [10.5] * 5, [11.0] * 5]),
             "b": np.array([[0.0] * 5, [0.1] * 5, [5.0] * 5])}
    gains = {"a": np.array([[1.0] * 3, [-30.0] * 3, [0.5] * 3, [0.4] * 3]),
             "b": np.array([[2.0] * 3, [0.05] * 3, [-3.0] * 3])}
    table = NB.fit({n: (stats[n], gains[n]) for n in stats}, k=3)
    near_ten = table.predict("a", np.full((1, 5), 10.5))
    np.testing.assert_allclose(near_ten, [[1 / 3] * 3])  # 2 gained, 1 lost 30 dB; not the one at 0
    # b's own pairs; 0.05 dB is within the floor
    np.testing.assert_allclose(table.predict("b", np.zeros((4, 5))), [[0.0] * 3] * 4)
    back = NB.GainTable.from_bytes(table.to_bytes())
    assert back.k == 3 and set(back.statistics) == {"a", "b"}
    np.testing.assert_array_equal(back.predict("a", np.ones((2, 5))), table.predict(
        "a", np.ones((2, 5))))


def test_margins_are_one_per_sign():
    """Calls of "better" that are always right need only the floor; calls of "worse" that are
    right only beyond a net share of -0.6 need 0.6."""
    predicted = np.array([0.2, 0.4, 0.8, -0.2, -0.6, -0.8, -1.0])[:, None].repeat(3, axis=1)
    gain = np.array([0.5, 1.0, 2.0, 0.5, 0.5, -2.0, -2.0])[:, None].repeat(3, axis=1)
    found = NB.margins(predicted, gain, precision=0.9)
    assert found["positive"] == dict.fromkeys(J.HEADS, 0.1)
    assert found["negative"] == dict.fromkeys(J.HEADS, 0.6)


def test_the_pool_gives_a_table_per_generator(photo):
    rng = np.random.default_rng(3)
    bases = JT.crop_bases([photo], 12, 48, (0.5, 1.0), rng)
    smooth = lambda x: np.stack([J.blur(v, 1.2) for v in x])  # noqa: E731
    pool = pool_of(bases, [smooth], rng)
    train, held = JT.held_out_rows(len(pool.bases), 0.25)
    table, margins = JT.neighbour_table(pool, train, held, ["smooth"], 5, 0.9)
    a, b = pool.versions[train, 0], pool.versions[train, 1]
    np.testing.assert_allclose(table.gains["smooth"], pool.closeness[train, 1]
                               - pool.closeness[train, 0])
    np.testing.assert_allclose(table.statistics["smooth"][0], NB.statistics(a[0], b[0]))
    assert set(margins) == {"smooth"} and set(margins["smooth"]) == {"positive", "negative"}
    with pytest.raises(ValueError, match="2 generator names"):
        JT.neighbour_table(pool, train, held, ["smooth", "other"], 5, 0.9)
    empty, none = JT.neighbour_table(pool_of(bases, [], rng), train,
                                     held, [], 5, 0.9)
    assert empty.statistics == {} and none == {}
    assert NB.GainTable.from_bytes(empty.to_bytes()).statistics == {}


def test_a_candidate_of_no_generator_is_not_judged_and_an_unchanged_one_gains_nothing(photo):
    table = NB.fit({"enhancer": (np.zeros((3, 5)), np.full((3, 3), 2.0))}, k=2)
    originals = photo[None, :32, :32]
    candidates = np.stack([originals, 255 - originals, originals], axis=1)
    shares = NB.judged(table, ["enhancer", "enhancer", "fused"], originals, candidates)
    assert (shares[0, 0] == 0).all() and (shares[0, 1] == 1).all()
    assert np.isnan(shares[0, 2]).all()  # unchanged, but not the neighbours' to judge
