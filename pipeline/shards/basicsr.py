"""gtforge shards as a BasicSR dataset: `type: GTForgeShardDataset` in a BasicSR options file.

Importing this module registers the class in BasicSR's DATASET_REGISTRY. BasicSR's own
`basicsr/train.py` only imports BasicSR's datasets, so train through this module's entry point,
which registers the dataset and then runs BasicSR's unchanged training pipeline:

    python -m pipeline.shards.basicsr -opt examples/basicsr_train_shards.yml

Each item is what BasicSR's PairedImageDataset returns: `lq` and `gt` as float32 RGB CHW in
[0,1], `lq_path` and `gt_path` as strings naming the shard, the sample and the image
(`<dataroot>/shard-00000_000017_gt_original`). Options (besides BasicSR's `name`, `type`,
`phase`, `scale`):

    dataroot        the shard folder (the one holding manifest.json)
    gt_size         GT crop side in HR pixels for phase `train` (val/test: the whole patch)
    use_hflip       horizontal (and vertical) flips          default true
    use_rot         rotations (transposes)                   default true
    target          hggt | original | a candidate name       default hggt (HGGT's rule)
    lq_source       lq | lq_vqvae | random                   default lq
    mean, std       optional normalisation, as in BasicSR

BasicSR is a test-only dependency of gtforge (`pip install --no-build-isolation basicsr-fixed`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils import data

from pipeline.shards.dataset import ShardDataset, to_tensor


class GTForgeShardDataset(data.Dataset):
    """BasicSR's paired-dataset contract over a gtforge shard folder (see the module doc)."""

    def __init__(self, opt: dict):
        super().__init__()
        self.opt = opt
        root = opt.get("dataroot") or opt.get("dataroot_gt")
        if not root:
            raise ValueError(f"dataset {opt.get('name')!r}: option `dataroot` (the shard folder "
                             "holding manifest.json) is missing")
        train = opt.get("phase", "train") == "train"
        self.shards = ShardDataset(
            Path(root), crop=opt["gt_size"] if train else None, target=opt.get("target", "hggt"),
            lq_source=opt.get("lq_source", "lq"), flip=train and opt.get("use_hflip", True),
            rotate=train and opt.get("use_rot", True))
        scale = opt.get("scale")
        if scale is not None and int(scale) != self.shards.scale:
            raise ValueError(f"dataset {opt.get('name')!r}: options say scale {scale}, the shards "
                             f"in {root} are x{self.shards.scale}")
        self.root, self.train = str(root), train
        self.mean, self.std = opt.get("mean"), opt.get("std")

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, index: int) -> dict:
        # Training draws are random (torch's generator, seeded per worker by BasicSR);
        # validation is a fixed function of the index.
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64)) if self.train else index
        sample = self.shards.draw(int(index), np.random.default_rng(seed))
        shard_no, n = self.shards.shards.locate(int(index))
        stem = f"{self.root}/{self.shards.shards.files[shard_no].stem}_{n:06d}"
        k = int(sample["target_index"]) - 1
        target = "gt_original" if k < 0 else f"gt_{self.shards.candidate_names[k]}"
        gt, lq = to_tensor(sample["gt"]), to_tensor(sample["lq"])
        if self.mean is not None or self.std is not None:
            from torchvision.transforms.functional import normalize

            normalize(lq, self.mean, self.std, inplace=True)
            normalize(gt, self.mean, self.std, inplace=True)
        return {"lq": lq, "gt": gt, "lq_path": f"{stem}_{sample['lq_source']}",
                "gt_path": f"{stem}_{target}"}


def register() -> None:
    """Add GTForgeShardDataset to BasicSR's DATASET_REGISTRY (idempotent)."""
    from basicsr.utils.registry import DATASET_REGISTRY

    if "GTForgeShardDataset" not in DATASET_REGISTRY:
        DATASET_REGISTRY.register(GTForgeShardDataset)


try:
    register()
except ImportError:     # BasicSR not installed: the class still follows its contract
    pass


def main(argv: list[str] | None = None, root_path: str | None = None) -> None:
    """BasicSR's train_pipeline with this dataset registered; arguments as basicsr/train.py
    (`-opt options.yml`, `--auto_resume`, `--force_yml ...`). Experiments go to root_path
    (default: the current folder)."""
    from basicsr.train import train_pipeline

    register()
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    train_pipeline(root_path or os.getcwd())


if __name__ == "__main__":
    main()
