import json

import cv2
import luigi
import numpy as np
import pytest

from pipeline.image.ingest import read_images
from pipeline.image.patches import texture_mask
from pipeline.quality import annotate, iqa, neighbours, voting
from pipeline.quality.judge import HEADS
from pipeline.store.imageio import image_path, read_rgb, write_rgb
from tasks import score_patches, select_patches
from tasks.base import Stage
from tasks.ingest import IngestHR
from tasks.score_patches import ScorePatches
from tasks.train_judge import CALIBRATION_JSON, NEIGHBOURS_FILE
from tests.conftest import assert_setting_moves_key, run_tasks

P, S, N = voting.POSITIVE, voting.SIMILAR, voting.NEGATIVE


# ------------------------------------------------------------------ votes and labels

@pytest.mark.parametrize("votes,expected", [
    ([P, P, S], P), ([N, N, P], N), ([S, S, P], S),
    ([P, S, N], S),            # HGGT: a three-way split is Similar
    ([P, N], S), ([P, P, N, N], S), ([P, P, S, S], S),  # ties for the most votes
    ([P, P, S, N], S),         # 2 of 4 is no majority
    ([P, P, P, N], P), ([N, N, N, S, P], N), ([N], N), ([], S),
])
def test_majority_and_ties(votes, expected):
    votes = np.array([votes], np.int8).reshape(1, len(votes))
    assert voting.majority(votes)[0] == expected
    counts = voting.vote_counts(votes)[0]
    assert counts.tolist() == [int((votes == v).sum()) for v in (N, S, P)]


def test_lower_is_better_metric_votes_the_right_way():
    # original 5, candidates 3 (better), 7 (worse), 5.5 (within the margin of 1)
    scores = np.array([[[5.0], [3.0], [7.0], [5.5]]], np.float32)
    lower = voting.vote(scores, [1.0], lower_better=[True], full_reference=[False])
    higher = voting.vote(scores, [1.0], lower_better=[False], full_reference=[False])
    assert lower[0, :, 0].tolist() == [P, N, S]
    assert higher[0, :, 0].tolist() == [N, P, S]


def test_each_candidate_can_vote_with_its_own_margins():
    # original 5; both candidates 1.5 better: within candidate 1's margin of 2, past 0's of 1
    scores = np.array([[[5.0], [6.5], [6.5]]], np.float32)
    votes = voting.vote(scores, [[1.0], [2.0]], lower_better=[False], full_reference=[False])
    assert votes[0, :, 0].tolist() == [P, S]
    with pytest.raises(ValueError, match="3 candidates"):
        voting.vote(scores, [[1.0], [2.0], [3.0]], [False], [False])


def test_a_negative_vote_can_need_its_own_margin():
    # original 5; candidates 4.5 (0.5 worse: past the Negative margin of 0.2, not 1) and 5.5
    scores = np.array([[[5.0], [4.5], [5.5]]], np.float32)
    votes = voting.vote(scores, [1.0], [False], [False], negative_margins=[0.2])
    assert votes[0, :, 0].tolist() == [N, S]
    assert voting.vote(scores, [1.0], [False], [False])[0, :, 0].tolist() == [S, S]
    with pytest.raises(ValueError, match="negative margins"):
        voting.vote(scores, [1.0], [False], [False], negative_margins=[[0.2], [0.2]])


def test_full_reference_can_only_say_similar_or_negative():
    # gmsd (lower better, FR): original vs itself 0; candidates 0.01, 0.2
    scores = np.array([[[4.0, 0.0], [2.0, 0.01], [2.0, 0.2]]], np.float32)
    votes = voting.vote(scores, [1.0, 0.03], [True, True], [False, True])
    assert votes[0, :, 1].tolist() == [S, N]
    # an FR score "better" than the original's self-score (numerical noise) never votes +1
    odd = voting.vote(np.array([[[0.0], [-1.0]]]), [0.03], [True], [True])
    assert odd[0, 0, 0] == S
    fr = [False, False, True]
    votes = np.array([[[P, P, N], [P, S, S]]], np.int8)
    assert voting.label(votes, fr, "vote")[0].tolist() == [P, S]
    assert voting.label(votes, fr, "veto")[0].tolist() == [N, S]
    assert voting.label(votes, fr, "ignore")[0].tolist() == [P, S]
    with pytest.raises(ValueError, match="fr_policy"):
        voting.label(votes, fr, "maybe")


def test_nan_score_votes_similar():
    votes = voting.vote(np.array([[[1.0], [np.nan]]]), [0.1], [False], [False])
    assert votes.tolist() == [[[S]]]


def test_annotators_that_did_not_judge_are_not_counted():
    """One Positive of three voters is Similar; when the other two gave no score (NaN: not
    judged) it is the only voter, and the label."""
    votes = np.array([[[P, S, S], [P, S, S], [S, S, S]]], np.int8)
    judged = np.array([[[True, True, True], [True, False, False], [False, False, False]]])
    assert voting.majority(votes).tolist() == [[S, S, S]]
    assert voting.majority(votes, judged).tolist() == [[S, P, S]]  # nobody judged: Similar
    assert voting.vote_counts(votes, judged)[0].tolist() == [[0, 2, 1], [0, 0, 1], [0, 0, 0]]
    assert voting.label(votes, [False] * 3, "vote", judged).tolist() == [[S, P, S]]


def test_difference_measures_and_filter():
    rng = np.random.default_rng(0)
    original = rng.integers(40, 200, (3, 16, 16, 3)).astype(np.uint8)
    noise = rng.choice([-10, 10], original.shape)  # zero-mean: invisible to |mean difference|
    cands = np.stack([original, np.clip(original + noise, 0, 255).astype(np.uint8)], axis=1)
    mean_diff = annotate.difference(original, cands, "mean_diff")
    mad = annotate.difference(original, cands, "mad")
    assert mean_diff.shape == mad.shape == (3, 2) and (mean_diff[:, 0] == 0).all()
    assert (mean_diff[:, 1] < 1).all() and np.allclose(mad[:, 1], 10)
    assert voting.difference_keep(mad, 1.0).all()
    assert not voting.difference_keep(mean_diff, 1.0).any()
    assert voting.difference_keep(np.zeros((3, 0)), 1.0).all()  # no candidates: keep all
    ssim = annotate.difference(original, cands, "ssim")
    assert np.allclose(ssim[:, 0], 0, atol=1e-5) and (ssim[:, 1] > 0.01).all()


def test_label_stats_tables():
    labels = np.array([[P, S], [P, P], [N, S], [S, S]], np.int8)
    votes = np.repeat(labels[..., None], 2, axis=2)
    keep = np.array([True, True, True, False])
    stats = voting.label_stats(labels, votes, keep, ["a", "b"], ["m1", "m2"])
    assert stats["per_candidate"]["a"] == {"positive": 2, "similar": 0, "negative": 1}
    assert stats["per_candidate"]["b"] == {"positive": 1, "similar": 2, "negative": 0}
    assert stats["positives_per_patch"] == {"0": 1, "1": 1, "2": 1}
    assert stats["votes_per_metric"]["m2"]["a"]["negative"] == 1 and stats["kept"] == 3
    assert voting.informative(labels).tolist() == [True, True, True, False]


# ------------------------------------------------------------------ calibration of the defaults

def _textured_patches(corpus, size=128, per_image=2):
    patches = []
    for path in sorted(corpus.iterdir()):
        rgb = read_rgb(path)
        ys, xs = np.mgrid[0:rgb.shape[0] - size + 1:size, 0:rgb.shape[1] - size + 1:size]
        pos = np.stack([ys.ravel(), xs.ravel()], 1)
        ok = texture_mask(rgb, pos, size, 30.0, 30.0, "laplacian_var")
        patches += [rgb[y:y + size, x:x + size] for y, x in pos[ok][:per_image]]
    return np.stack(patches)


def test_offline_iqa_margins_identical_similar_noise_blur_negative(build_env, small_corpus):
    """The offline pyiqa annotators with the margins luigi.cfg documents for them."""
    s = {"metrics": ["niqe", "piqe", "gmsd"], "fr_policy": "vote",
         "margins": {"niqe": 2.0, "piqe": 10.0, "gmsd": 0.03}}
    metrics = list(s["metrics"])
    infos = [iqa.metric_info(m) for m in metrics]
    original = _textured_patches(small_corpus)
    rng = np.random.default_rng(0)
    noised = np.clip(original + rng.normal(0, 20, original.shape), 0, 255).astype(np.uint8)
    blurred = np.stack([cv2.blur(p, (5, 5)) for p in original])
    cands = np.stack([original.copy(), noised, blurred], axis=1)
    scores = annotate.score_patches(original, cands, metrics)
    fr = [i.full_reference for i in infos]
    votes = voting.vote(scores, [s["margins"][m] for m in metrics],
                          [i.lower_better for i in infos], fr)
    labels = voting.label(votes, fr, s["fr_policy"])
    assert len(original) >= 6
    assert (labels[:, 0] == S).all() and (votes[:, 0] == S).all()
    assert (labels[:, 1] == N).all(), labels
    assert (labels[:, 2] == N).all(), labels
    # Negative by a majority of annotators, not by one metric alone
    assert ((votes[:, 1:] == N).sum(-1) >= 2).all()


# ------------------------------------------------------------------ the stage

class FakeCandidate(Stage):
    """A candidate GT made from the HR image: 'same' (a copy) or 'noisy' (Gaussian sigma 20)."""

    kind = luigi.Parameter()

    def requires(self):
        return {"hr": IngestHR()}

    def build(self, out):
        (out / "images").mkdir()
        for img in read_images(self.input_dir("hr")):
            rgb = read_rgb(image_path(self.input_dir("hr"), img.id))
            if self.kind == "noisy":
                rng = np.random.default_rng(self.seed_for(img.id))
                rgb = np.clip(rgb + rng.normal(0, 20, rgb.shape), 0, 255).astype(np.uint8)
            write_rgb(image_path(out, img.id), rgb)


@pytest.fixture
def candidates(build_env, monkeypatch):
    """Replace the configured candidates (both stages look them up) by fake ones; a sparser
    patch grid (about 30 patches) keeps the stage tests short. The annotators are the offline
    pyiqa metrics (the judge has its own test)."""
    build_env.set("SelectPatches", "step", 128)
    build_env.set("ScorePatches", "metrics", '["niqe", "piqe", "gmsd"]')
    build_env.set("ScorePatches", "margins", '{"niqe": 2.0, "piqe": 10.0, "gmsd": 0.03}')
    chosen = {}

    def fake(chunk=()):
        return {name: FakeCandidate(kind=name) for name in chosen["names"]}

    monkeypatch.setattr(score_patches, "candidate_stages", fake)
    monkeypatch.setattr(select_patches, "candidate_stages", fake)

    def use(*names):
        chosen["names"] = names

    use()
    return use


def _outputs(task):
    scored = np.load(task.out_dir / "scores.npz", allow_pickle=False)
    stats = json.loads((task.out_dir / "label_stats.json").read_text())
    return scored, stats


def test_stage_without_candidates(build_env, candidates):
    task = ScorePatches()
    run_tasks(task)
    scored, stats = _outputs(task)
    n = len(np.load(task.input_dir("patches") / "patches.npz")["x"])
    assert n > 0 and scored["scores"].shape == (n, 1, 3) and scored["labels"].shape == (n, 0)
    assert scored["votes"].shape == (n, 0, 3) and scored["keep"].all()
    assert scored["candidate_names"].shape == (0,) and scored["metric_names"].dtype.kind == "U"
    assert np.isfinite(scored["scores"]).all()
    assert stats["positives_per_patch"] == {"0": n}
    assert stats["difference_filter"]["applied"] is False


def test_stage_labels_fake_candidates(build_env, candidates):
    candidates("same", "noisy")
    build_env.set("ScorePatches", "drop_all_similar", "true")
    task = ScorePatches()
    run_tasks(task)
    scored, stats = _outputs(task)
    n = len(scored["keep"])
    assert list(scored["candidate_names"]) == ["same", "noisy"]
    assert list(scored["metric_names"]) == ["niqe", "piqe", "gmsd"]
    assert scored["scores"].shape == (n, 3, 3) and scored["votes"].dtype == np.int8
    np.testing.assert_array_equal(scored["scores"][:, 0], scored["scores"][:, 1])
    assert (scored["labels"][:, 0] == S).all()
    assert (scored["labels"][:, 1] == N).mean() >= 0.9
    # kept = differs from the original (the noisy one does) and not all Similar
    np.testing.assert_array_equal(scored["keep"], scored["labels"][:, 1] != S)
    assert stats["per_candidate"]["same"]["similar"] == stats["kept"]
    assert sum(stats["per_candidate"]["noisy"].values()) == stats["kept"]
    assert stats["drop_all_similar"]["dropped"] == n - stats["kept"]
    diff = np.load(task.out_dir / "difference.npz")
    assert str(diff["measure"]) == "mad" and (diff["difference"][:, 0] == 0).all()


def test_stage_with_the_learned_judge(build_env, candidates):
    candidates("same", "noisy")
    build_env.set("ScorePatches", "metrics", '["judge"]')
    build_env.set("ScorePatches", "margins", "{}")
    task = ScorePatches()
    run_tasks(task)
    table = task.table()
    assert table.metric_names == ["judge_psnr", "judge_ssim", "judge_edges"]
    assert table.modes == ["pairwise"] * 3 and table.lower_better == [False] * 3
    assert (table.scores[:, :2] == 0).all()  # the original, and an identical copy: 0 dB
    assert (table.labels[:, 0] == S).all() and (table.vote_counts[:, 0] == [0, 3, 0]).all()
    margins = task.input_stages()["judge"].margins()
    stats = json.loads((task.out_dir / "label_stats.json").read_text())
    for name in ("same", "noisy"):  # not generators of the judge: its pooled margins
        assert [m["margins"][name] for m in stats["metrics"]] == [
            pytest.approx(margins[h]) for h in ("psnr", "ssim", "edges")]


def _scored_with_a_worsening_table(build_env, candidates, metrics: str):
    """ScorePatches' table for candidates "same" and "noisy" with `metrics`, after TrainJudge
    with its neighbours table replaced by one for "noisy" in which every known pair came out
    worse (margins 0.2 for a Positive vote, 0.9 for a Negative one)."""
    candidates("same", "noisy")
    build_env.set("ScorePatches", "metrics", metrics)
    build_env.set("ScorePatches", "margins", "{}")
    judge = ScorePatches().requires()["judge"]
    run_tasks(judge)
    rng = np.random.default_rng(0)
    table = neighbours.fit({"noisy": (rng.normal(size=(40, 5)), np.full((40, 3), -1.0))}, k=5)
    (judge.out_dir / NEIGHBOURS_FILE).write_bytes(table.to_bytes())
    calibration = json.loads((judge.out_dir / CALIBRATION_JSON).read_text())
    calibration["neighbour_margins"] = {"noisy": {"positive": dict.fromkeys(HEADS, 0.2),
                                                  "negative": dict.fromkeys(HEADS, 0.9)}}
    (judge.out_dir / CALIBRATION_JSON).write_text(json.dumps(calibration))
    task = ScorePatches()
    run_tasks(task)
    return task.table()


def test_stage_with_the_neighbours_annotator(build_env, candidates):
    """Three pairwise heads read off TrainJudge's table with its margins per sign: here a
    table in which every known pair like "noisy" came out worse. "same" was no generator:
    the neighbours do not judge it (no score, no margin), and it is Similar."""
    scored = _scored_with_a_worsening_table(build_env, candidates, '["neighbours"]')
    stats = json.loads((ScorePatches().out_dir / "label_stats.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"{c} in label_stats.json"))
    assert [m["margins"]["same"] for m in stats["metrics"]] == [None] * 3
    assert scored.metric_names == ["neighbours_psnr", "neighbours_ssim", "neighbours_edges"]
    assert scored.modes == ["pairwise"] * 3
    assert (scored.scores[:, 0] == 0).all() and np.isnan(scored.scores[:, 1]).all()
    assert (scored.scores[:, 2] == -1).all()
    assert (scored.labels[:, 0] == S).all() and (scored.labels[:, 1] == N).all()
    assert (scored.vote_counts[:, 0] == 0).all()  # nobody judged "same"
    assert np.isnan(scored.margins[0]).all() and np.isnan(scored.negative_margins[0]).all()
    np.testing.assert_allclose(scored.margins[1], [0.2] * 3)
    np.testing.assert_allclose(scored.negative_margins[1], [0.9] * 3)


def test_with_both_learned_annotators_each_candidate_is_judged_by_one(build_env, candidates):
    """The neighbours judge the candidates of a generator (here "noisy", by a table in which
    every known pair came out worse), the judge the others ("same")."""
    scored = _scored_with_a_worsening_table(build_env, candidates, '["neighbours", "judge"]')
    by_neighbours, by_judge = slice(0, 3), slice(3, 6)
    assert np.isnan(scored.scores[:, 1, by_neighbours]).all()  # "same": no table
    assert (scored.scores[:, 1, by_judge] == 0).all()  # identical: the judge says 0 dB
    assert np.isnan(scored.scores[:, 2, by_judge]).all() and (scored.scores[:, 2, :3] == -1).all()
    assert np.isnan(scored.margins[0, by_neighbours]).all()
    assert np.isnan(scored.margins[1, by_judge]).all()
    assert (scored.labels[:, 0] == S).all() and (scored.labels[:, 1] == N).all()
    assert (scored.vote_counts[:, 1] == [3, 0, 0]).all()  # three voters, not six
    assert (scored.vote_counts[:, 0] == [0, 3, 0]).all()


def test_a_candidate_the_judge_was_calibrated_on_votes_with_its_own_margins(build_env,
                                                                             candidates):
    candidates("same", "noisy")
    build_env.set("ScorePatches", "metrics", '["judge"]')
    build_env.set("ScorePatches", "margins", "{}")
    judge = ScorePatches().requires()["judge"]
    run_tasks(judge)
    calibration = json.loads((judge.out_dir / CALIBRATION_JSON).read_text())
    calibration["candidate_margins"] = {"noisy": {h: 50.0 for h in HEADS}}
    (judge.out_dir / CALIBRATION_JSON).write_text(json.dumps(calibration))
    task = ScorePatches()
    run_tasks(task)
    table = task.table()
    np.testing.assert_allclose(table.margins, [list(judge.margins().values()), [50.0] * 3])
    assert (table.labels[:, 1] == S).all()  # no judged gain passes 50 dB


def test_difference_filter_drops_unchanged_patches(build_env, candidates):
    candidates("same")
    task = ScorePatches()
    run_tasks(task)
    scored, stats = _outputs(task)
    assert not scored["keep"].any() and stats["difference_filter"]["dropped"] == len(scored["keep"])


@pytest.mark.parametrize("name,value", [
    ("metrics", '["niqe", "gmsd"]'), ("margins", '{"niqe": 1.0, "piqe": 10.0, "gmsd": 0.03}'),
    ("fr_policy", "veto"), ("difference_measure", "ssim"), ("difference_threshold", 2.0),
    ("drop_all_similar", "true"),
])
def test_each_setting_changes_the_key(build_env, name, value):
    assert_setting_moves_key(build_env, ScorePatches, "ScorePatches", name, value)


def test_batch_does_not_change_the_key(build_env):
    assert ScorePatches(batch=8).key == ScorePatches().key


def test_missing_margin_is_named(build_env, candidates):
    build_env.set("ScorePatches", "metrics", '["niqe", "entropy"]')
    with pytest.raises(ValueError, match="entropy"):
        ScorePatches()._margins(["niqe", "entropy"])
