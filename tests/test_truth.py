"""Measuring against a known truth (pipeline.quality.truth) and training towards targets
(pipeline.train.evaluate)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.image.sample import make_quality_corpus
from pipeline.quality import truth
from pipeline.quality.judge import add_noise
from pipeline.shards.reader import ShardSet
from pipeline.shards.writer import ShardWriter
from pipeline.store.imageio import read_rgb, write_rgb
from pipeline.train import evaluate as ev
from tasks.evaluate import EvaluateTargets
from tests.conftest import assert_setting_moves_key, run_tasks


def test_oracle_confusion_and_rates():
    labels = np.array([1, 1, 0, -1, -1, 0])
    oracle = truth.oracle(np.array([0.5, -0.3, 0.1, -0.25, 0.3, 0.19]))
    assert oracle.tolist() == [1, -1, 0, -1, 1, 0]
    m = truth.confusion(labels, oracle)
    assert m.tolist() == [[1, 0, 1], [0, 2, 0], [1, 0, 1]]
    r = truth.rates(m)
    assert r["positive_precision"] == 0.5 and r["negative_recall"] == 0.5
    assert truth.rates(np.zeros((3, 3), int))["positive_recall"] is None


def test_quality_corpus_has_clean_and_imperfect_of_each_kind(tmp_path):
    kinds = make_quality_corpus(tmp_path)
    assert set(kinds.values()) == {"blur", "noise"} and len(kinds) == 14
    for name in kinds:
        clean = read_rgb(tmp_path / "clean" / name)
        made = read_rgb(tmp_path / "imperfect" / name)
        assert clean.shape == made.shape
        assert 25 < truth.distances(made, clean)["psnr"] < 45, name
    first = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*.png")}
    assert make_quality_corpus(tmp_path) == kinds  # a rerun keeps the files (and the keys)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/*.png")} == first


def _shards(tmp_path, references):
    """A shard set of 4 patches of a reference photo, original = noisy, candidate 0 = the
    clean crop itself (truly better), candidate 1 = the original with more noise (worse)."""
    clean = references[:64, :64]
    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path / "set", samples_per_shard=8, patch_size=32, scale=4,
                     candidate_names=["better", "worse"], metric_names=[], compression=None,
                     params={}, sources=["photos/ref.png"]) as w:
        for y in (0, 32):
            for x in (0, 32):
                gt = clean[y:y + 32, x:x + 32]
                noisy = add_noise(gt, 8, False, rng)
                worse = add_noise(noisy, 10, False, rng)
                w.add(noisy, np.stack([gt, worse]), np.array([1, 0], np.int8),
                      np.zeros((3, 0), np.float32), noisy[::4, ::4], noisy[::4, ::4],
                      "0" * 16, x, y, 0)
    return ShardSet(tmp_path / "set")


def test_measure_shards_finds_the_truly_better_and_worse(tmp_path, small_corpus):
    reference = read_rgb(small_corpus / "astronaut.png")[100:164, 100:164]
    (tmp_path / "refs").mkdir()
    write_rgb(tmp_path / "refs" / "ref.png", np.ascontiguousarray(reference))
    shards = _shards(tmp_path, reference)
    found = truth.measure_shards(shards, truth.reference_index(tmp_path / "refs"))
    better, worse = found["better"].summary(), found["worse"].summary()
    assert better["patches"] == 4 and better["gain"]["psnr"]["closer"] == 4
    assert worse["gain"]["psnr"]["mean"] < 0 and worse["confusion"][0][1] == 4  # N labelled S
    assert better["positive_precision"] == 1.0 and worse["negative_recall"] == 0.0
    means = sorted(shards.shard(0).image("gt_original", n).mean() for n in range(4))
    cut = (means[1] + means[2]) / 2
    brighter = truth.measure_shards(shards, truth.reference_index(tmp_path / "refs"),
                                    keep_patch=lambda gt: gt.mean() > cut)
    assert brighter["better"].summary()["patches"] == 2  # only the patches keep_patch accepts


def _samples(n=6, k=2, seed=0):
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (n, 32, 32, 3), np.uint8)
    cands = rng.integers(0, 256, (n, k, 32, 32, 3), np.uint8)
    labels = np.array([[1, 0], [0, 0], [1, 1], [-1, 0], [0, 1], [0, 0]], np.int8)[:n]
    return ev.Samples(lq=hr[:, ::4, ::4].copy(), original=hr, candidates=cands, labels=labels,
                      clean=255 - hr, names=["a", "b"])


def test_targets_follow_hggt_and_the_names():
    s = _samples()
    rows = np.arange(6)
    draw = np.random.default_rng(0)
    hggt = s.target("hggt", rows, draw)
    np.testing.assert_array_equal(hggt[1], s.original[1])            # no Positive: original
    np.testing.assert_array_equal(hggt[0], s.candidates[0, 0])       # its only Positive
    assert any((hggt[2] == s.candidates[2, j]).all() for j in (0, 1))
    np.testing.assert_array_equal(s.target("b", rows, draw), s.candidates[:, 1])
    np.testing.assert_array_equal(s.target("clean", rows, draw), 255 - s.original)
    with pytest.raises(ValueError, match="unknown target"):
        s.target("nope", rows, draw)


def test_same_seed_same_network_whatever_the_target():
    s = _samples()
    a = ev.train(s, "original", seed=3, steps=2, scale=4, batch=2, crop=4)
    b = ev.train(s, "original", seed=3, steps=2, scale=4, batch=2, crop=4)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert (x == y).all()


def test_l1_trains_towards_the_median_and_mse_towards_the_mean(build_env):
    # one grey LR, its targets black twice and white once: median 0, mean 85 grey levels
    lq = np.full((3, 4, 4, 3), 128, np.uint8)
    hr = np.zeros((3, 16, 16, 3), np.uint8)
    hr[2] = 255
    s = ev.Samples(lq=lq, original=hr, candidates=hr[:, None], labels=np.zeros((3, 1), np.int8),
                   clean=None, names=["a"])
    grey = torch.full((1, 3, 4, 4), 128 / 255)
    outputs = {}
    for loss in ("l1", "mse"):
        model = ev.train(s, "original", seed=0, steps=80, scale=4, batch=6, crop=4, lr=1e-2,
                         loss=loss)
        with torch.no_grad():
            outputs[loss] = float(model(grey).mean()) * 255
    assert outputs["l1"] < 10 and abs(outputs["mse"] - 85) < 15
    with pytest.raises(ValueError, match="unknown loss 'l2'"):
        ev.train(s, "original", seed=0, steps=1, scale=4, loss="l2")
    assert_setting_moves_key(build_env, EvaluateTargets, "EvaluateTargets", "loss", "mse")


def test_compare_reports_gains_spread_and_share_of_the_ceiling():
    runs = {"original": [{"psnr": 20.0, "ssim": 0.5}, {"psnr": 21.0, "ssim": 0.6}],
            "hggt": [{"psnr": 20.5, "ssim": 0.52}, {"psnr": 21.1, "ssim": 0.61}],
            "clean": [{"psnr": 21.0, "ssim": 0.55}, {"psnr": 21.2, "ssim": 0.62}]}
    table = ev.compare(runs)
    gain = table["hggt"]["psnr"]["gain_over_original"]
    assert gain == {"mean": 0.3, "min": 0.1, "max": 0.5}
    assert table["hggt"]["psnr"]["share_of_ceiling"] == pytest.approx(0.3 / 0.6, abs=1e-3)
    assert "gain_over_original" not in table["original"]["psnr"]


def test_folds_hold_every_photo_out_once(build_env, small_corpus):
    build_env.set("gtforge", "references", small_corpus)
    sources = sorted(p.name for p in small_corpus.iterdir()) + ["no_reference.png"]
    shards = SimpleNamespace(manifest={"sources": sources})
    referenced = set(sources[:-1])
    folds = EvaluateTargets(folds=3).splits(shards)
    held = [h for _, h in folds]
    assert len(folds) == 3 and sorted(sum(held, [])) == sorted(referenced)
    assert all(train == referenced - set(h) for train, h in folds)
    (train, one), = EvaluateTargets(folds=1, holdout=0.3).splits(shards)
    assert len(one) == 1 and train == referenced - set(one)
    with pytest.raises(ValueError, match="folds = 5 needs at least 5 photos"):
        EvaluateTargets(folds=5).splits(shards)
    assert_setting_moves_key(build_env, EvaluateTargets, "EvaluateTargets", "folds", 3)


def test_heldout_lr_starts_from_the_gt_or_the_clean_reference(build_env, small_corpus, tmp_path,
                                                               monkeypatch):
    references = tmp_path / "references"
    references.mkdir()
    for photo in small_corpus.iterdir():
        write_rgb(references / f"{photo.stem}.png", 255 - read_rgb(photo))
    build_env.set("gtforge", "references", references)
    run_tasks(*(s for name, s in EvaluateTargets().requires().items() if name.startswith("hr:")))
    monkeypatch.setattr(ev, "heldout_lr", lambda image, recipe, seed: image)  # no degradation
    photo = read_rgb(small_corpus / "chelsea.png")
    for start, expected in (("gt", photo), ("clean", 255 - photo)):
        (held,) = EvaluateTargets(heldout_lr=start, heldout_draws=1).heldout(["chelsea.png"])
        assert held.name == "chelsea.png" and len(held.lrs) == 1
        np.testing.assert_array_equal(held.clean, 255 - photo)
        np.testing.assert_array_equal(held.lrs[0], expected)
    assert_setting_moves_key(build_env, EvaluateTargets, "EvaluateTargets", "heldout_lr", "clean")


def test_heldout_draws_are_distinct_and_the_first_keeps_its_seed(build_env, small_corpus):
    build_env.set("gtforge", "references", small_corpus)
    run_tasks(*(s for name, s in EvaluateTargets().requires().items() if name.startswith("hr:")))
    (one,) = EvaluateTargets(heldout_draws=1).heldout(["chelsea.png"])
    (three,) = EvaluateTargets(heldout_draws=3).heldout(["chelsea.png"])
    assert len(three.lrs) == 3
    np.testing.assert_array_equal(three.lrs[0], one.lrs[0])
    assert not np.array_equal(three.lrs[1], three.lrs[2])
    with pytest.raises(ValueError, match="heldout_draws must be at least 1"):
        EvaluateTargets(heldout_draws=0).heldout(["chelsea.png"])
    assert_setting_moves_key(build_env, EvaluateTargets, "EvaluateTargets", "heldout_draws", 2)


def test_measure_averages_draws_per_photo_then_photos():
    clean = np.full((8, 8, 3), 100, np.uint8)

    class Repeat4(torch.nn.Module):  # x4 by repetition: every output pixel is its LR value
        def forward(self, x):
            return x.repeat_interleave(4, 2).repeat_interleave(4, 3)

    def lr(value):
        return np.full((2, 2, 3), value, np.uint8)

    photos = [ev.HeldOut("a.png", clean, [lr(101), lr(104)]), ev.HeldOut("b.png", clean, [lr(102)])]
    found = ev.measure(Repeat4(), photos)
    psnr = {d: 20 * np.log10(255 / d) for d in (1, 2, 4)}
    assert found["photos"]["a.png"]["psnr"] == pytest.approx((psnr[1] + psnr[4]) / 2)
    assert found["photos"]["b.png"]["psnr"] == pytest.approx(psnr[2])
    assert found["psnr"] == pytest.approx(((psnr[1] + psnr[4]) / 2 + psnr[2]) / 2)


def test_photo_gains_pair_runs_and_average_per_photo():
    def run(**photos):
        return {"photos": {p: {"psnr": v, "ssim": 0.0} for p, v in photos.items()}}

    measured = {"original": [run(a=20.0, b=30.0), run(a=21.0, b=31.0), run(c=10.0)],
                "clean": [run(a=20.5, b=29.0), run(a=21.5, b=31.0), run(c=10.3)]}
    assert ev.photo_gains(measured) == {"a": {"clean": 0.5}, "b": {"clean": -0.5},
                                        "c": {"clean": pytest.approx(0.3)}}
