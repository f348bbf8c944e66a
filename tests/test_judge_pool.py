"""JudgePool: the part of TrainJudge's pool made without the CFMG."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.train import judge as JT
from tasks.judge_pool import BASES, INPUTS, VARIANTS, JudgePool, active_generators
from tasks.train_judge import TrainJudge
from tests.conftest import run_tasks


def test_only_the_configured_candidates_generate(build_env):
    build_env.set("gtforge", "candidates", "rcan_blur")
    assert active_generators(["rcan_noise", "rcan_blur", "sr", "fused"]) == ["rcan_blur"]
    build_env.set("gtforge", "candidates", "elan_noise, fused")
    assert active_generators(["rcan_blur", "elan_noise", "sr", "fused"]) == [
        "elan_noise", "sr", "fused"]
    with pytest.raises(ValueError, match="unknown 'esrgan'"):
        active_generators(["esrgan"])


def test_the_pool_holds_each_enhancers_outputs_for_its_inputs(build_env):
    """TrainJudge's pool stage is set by TrainJudge's settings; it holds bases with a border,
    an input for each and the enhancer's outputs for exactly those inputs; the SR variants
    only when "sr" or "fused" generates."""
    build_env.set("gtforge", "candidates", "rcan_blur")
    build_env.set("tiny.TrainEnhancer", "iterations", 2)
    judge = TrainJudge()
    pool = judge.requires()["pool"]
    assert isinstance(pool, JudgePool) and pool.generators == ("rcan_blur",)
    assert (pool.bases, pool.crop) == (judge.settings["bases"], judge.settings["crop"])
    run_tasks(pool)
    side = pool.crop + 2 * JT.border(pool.crop)
    bases, inputs, made = pool.column(BASES), pool.column(INPUTS), pool.column("rcan_blur")
    assert bases.shape == inputs.shape == made.shape == (pool.bases, side, side, 3)
    assert (inputs != bases).any(axis=(1, 2, 3)).mean() > 0.5  # most inputs are degraded
    enhancer = pool.input_stages()["rcan_blur"].load_generator()
    np.testing.assert_array_equal(made, JT.network_generator(enhancer)(np.array(inputs)))
    assert not (pool.out_dir / f"{VARIANTS}.npy").exists()
    build_env.set("tiny.TrainJudge", "bases", 40)
    assert TrainJudge().requires()["pool"].key != pool.key
