"""The BasicSR adapter: BasicSR's dataset contract, and BasicSR's own training pipeline
running a few iterations on shards through an options file naming the dataset."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from examples.photo_shards import write_photo_shards

basicsr = pytest.importorskip("basicsr")

from basicsr.data import build_dataset  # noqa: E402

from pipeline.shards.basicsr import GTForgeShardDataset, main  # noqa: E402

EXAMPLE = Path(__file__).parents[1] / "examples" / "basicsr_train_shards.yml"


@pytest.fixture(scope="module")
def photo_shards(tmp_path_factory) -> Path:
    import skimage.data

    out = tmp_path_factory.mktemp("basicsr") / "shards"
    photos = [skimage.data.astronaut()[::4, ::4].copy(), skimage.data.coffee()[::3, ::3].copy()]
    write_photo_shards(photos, out, patch=32, samples_per_shard=8)
    return out


@pytest.fixture
def one_thread():
    """BasicSR steps on a busy 2-core machine are far faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registered_by_name_with_basicsr_paired_contract(photo_shards):
    train = build_dataset({"name": "t", "type": "GTForgeShardDataset", "phase": "train",
                           "dataroot": str(photo_shards), "gt_size": 16, "scale": 4,
                           "use_hflip": True, "use_rot": True})
    assert isinstance(train, GTForgeShardDataset) and len(train) > 20
    item = train[3]
    assert set(item) == {"lq", "gt", "lq_path", "gt_path"}
    assert item["gt"].shape == (3, 16, 16) and item["lq"].shape == (3, 4, 4)
    assert item["gt"].dtype == item["lq"].dtype == torch.float32
    assert 0 <= float(item["gt"].min()) and float(item["gt"].max()) <= 1
    assert item["gt_path"].startswith(f"{photo_shards}/shard-00000_000003_gt_")
    assert item["lq_path"] == f"{photo_shards}/shard-00000_000003_lq"

    val = build_dataset({"name": "v", "type": "GTForgeShardDataset", "phase": "val",
                         "dataroot": str(photo_shards), "target": "original",
                         "lq_source": "lq_vqvae"})
    item = val[9]                      # whole patch, no augmentation, RGB order
    with h5py.File(photo_shards / "shard-00001.h5", "r") as f:
        gt, lq = f["gt_original"][1], f["lq_vqvae"][1]
    np.testing.assert_allclose(item["gt"].numpy(), gt.transpose(2, 0, 1) / 255, atol=1e-6)
    np.testing.assert_allclose(item["lq"].numpy(), lq.transpose(2, 0, 1) / 255, atol=1e-6)
    assert item["gt_path"].endswith("shard-00001_000001_gt_original")


def test_options_errors_are_clear(photo_shards):
    with pytest.raises(ValueError, match="option `dataroot`"):
        GTForgeShardDataset({"name": "x", "phase": "train", "gt_size": 16})
    with pytest.raises(ValueError, match="options say scale 2, the shards .* are x4"):
        GTForgeShardDataset({"name": "x", "phase": "val", "dataroot": str(photo_shards),
                             "scale": 2})


def test_basicsr_train_pipeline_runs_on_shards(photo_shards, tmp_path, one_thread):
    opt = yaml.safe_load(EXAMPLE.read_text())
    assert opt["datasets"]["train"]["type"] == "GTForgeShardDataset"
    opt["num_gpu"] = 0
    for phase in ("train", "val"):
        opt["datasets"][phase]["dataroot"] = str(photo_shards)
    opt["datasets"]["train"].update(gt_size=32, num_worker_per_gpu=0, batch_size_per_gpu=4)
    opt["network_g"].update(num_feat=8, num_block=1)
    opt["train"]["total_iter"] = 6
    opt["train"]["scheduler"]["periods"] = [6]
    opt["val"]["val_freq"] = 6
    opt["logger"].update(print_freq=2, save_checkpoint_freq=6)
    options = tmp_path / "options.yml"
    options.write_text(yaml.safe_dump(opt))

    main(["-opt", str(options)], root_path=str(tmp_path))

    run = tmp_path / "experiments" / opt["name"]
    weights = torch.load(run / "models" / "net_g_latest.pth", weights_only=True)["params"]
    assert all(torch.isfinite(w).all() for w in weights.values())
    state = torch.load(run / "training_states" / "6.state", weights_only=True)
    assert state["iter"] == 6 and state["optimizers"][0]["state"]   # Adam took steps
