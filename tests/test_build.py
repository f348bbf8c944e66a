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
    "tiny.TrainEnhancer": {"iterations": 4, "ckpt_every": 2},
    "tiny.TrainVQVAE2": {"max_epochs": 1},
    "tiny.VQVAEDegradeLR": {"epochs": 1},
    "tiny.TrainSR": {"iterations": 4},
    "tiny.TrainMaskGenerator": {"iterations": 4},
}
CANDIDATES = ["elan_noise", "fused"]


def test_build_verifies_reads_back_and_reruns_nothing(build_env, tmp_path):
    build_env.set("gtforge", "candidates", ",".join(CANDIDATES))
    for section, values in SHORT_TRAININGS.items():
        for key, value in values.items():
            build_env.set(section, key, value)
    run_tasks(BuildDataset())
    out = tmp_path / "out"

    shards.verify(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert shards.summary(out)["samples"] == sum(s["samples"] for s in manifest["shards"]) > 10
    assert (out / "report" / "index.html").stat().st_size > 1000
    with h5py.File(out / manifest["shards"][0]["file"], "r") as f:
        names = [n.decode() for n in f["gt_candidates"].attrs["candidate_names"]]
        assert names == CANDIDATES
        n, k = f["labels"].shape
        assert k == len(CANDIDATES) and f["gt_original"].shape == (n, 128, 128, 3)
        assert f["lq"].shape == f["lq_vqvae"].shape == (n, 32, 32, 3)
        assert set(np.unique(f["labels"][:])) <= {-1, 0, 1}

    again = run_tasks(BuildDataset())
    assert "ran successfully" not in again.summary_text

    loader = torch.utils.data.DataLoader(ShardDataset(out, crop=64), batch_size=4, num_workers=2)
    batch = next(iter(loader))
    assert batch["gt"].shape == (4, 3, 64, 64) and batch["lq"].shape == (4, 3, 16, 16)
