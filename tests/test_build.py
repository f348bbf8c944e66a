"""End to end: BuildDataset on a few small photos (tiny preset, trainings cut short)."""

import json

import h5py
import numpy as np
import pytest
import torch

from pipeline import shards
from pipeline.dataset import ShardDataset
from tasks.publish import BuildDataset
from tests.conftest import run_tasks

pytestmark = pytest.mark.slow

SHORT_TRAININGS = {
    "tiny.TrainEnhancer": {"iterations": 6, "ckpt_every": 3},
    "tiny.TrainVQVAE2": {"max_epochs": 1},
    "tiny.VQVAEDegradeLR": {"epochs": 1},
    "tiny.TrainSR": {"iterations": 6},
    "tiny.TrainMaskGenerator": {"iterations": 6},
}


def shorten_trainings(settings) -> None:
    for section, values in SHORT_TRAININGS.items():
        for key, value in values.items():
            settings.set(section, key, value)


@pytest.fixture
def built(build_env, tmp_path):
    build_env.set("gtforge", "candidates", "rcan_noise,elan_blur,fused")
    shorten_trainings(build_env)
    run_tasks(BuildDataset())
    return tmp_path / "out"


def test_build_writes_verified_shards_and_a_report(built):
    shards.verify(built)
    manifest = json.loads((built / "manifest.json").read_text())
    info = shards.summary(built)
    assert info["samples"] == sum(s["samples"] for s in manifest["shards"]) > 10
    assert (built / "report" / "index.html").stat().st_size > 1000
    with h5py.File(built / manifest["shards"][0]["file"], "r") as f:
        assert list(f["gt_candidates"].attrs["candidate_names"]) == ["rcan_noise", "elan_blur", "fused"]
        n, k = f["labels"].shape
        assert k == 3 and f["gt_original"].shape == (n, 128, 128, 3)
        assert f["lq"].shape == f["lq_vqvae"].shape == (n, 32, 32, 3)
        assert set(np.unique(f["labels"][:])) <= {-1, 0, 1}


def test_rebuild_runs_nothing_and_reader_gives_batches(built, build_env):
    result = run_tasks(BuildDataset())
    assert "ran successfully" not in result.summary_text
    loader = torch.utils.data.DataLoader(ShardDataset(built, crop=64), batch_size=4,
                                         num_workers=2)
    batch = next(iter(loader))
    assert batch["gt"].shape == (4, 3, 64, 64) and batch["lq"].shape == (4, 3, 16, 16)
