"""ShardDataset (crops, augmentation, HGGT target rule) and ShardBatchSampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.shards.dataset import ShardBatchSampler, ShardDataset, augment, to_float
from pipeline.shards.writer import ShardWriter

PATCH, SCALE = 32, 4


def structured_shards(out, n: int = 12, per_shard: int = 4, labels=None) -> list[dict]:
    """Samples whose pixels say what they are: gt_original R = sample, G = row, B = column
    (LR: the same at LR coordinates); candidate k = original + 10 * (k + 1) in B... kept
    recognisable by its R channel = 100 + 10 * k + sample."""
    lr = PATCH // SCALE
    yy, xx = np.mgrid[:PATCH, :PATCH]
    ly, lx = np.mgrid[:lr, :lr]
    rows = []
    with ShardWriter(out, samples_per_shard=per_shard, patch_size=PATCH, scale=SCALE,
                     candidate_names=["a", "b", "c"], metric_names=["m"], compression=None,
                     params={}, sources=["s"]) as w:
        for i in range(n):
            gt = np.dstack([np.full((PATCH, PATCH), i), yy, xx]).astype(np.uint8)
            cands = np.stack([np.dstack([np.full((PATCH, PATCH), 100 + 10 * k + i), yy, xx])
                              for k in range(3)]).astype(np.uint8)
            lq = np.dstack([np.full((lr, lr), i), ly * SCALE, lx * SCALE]).astype(np.uint8)
            lab = np.array(labels[i] if labels is not None else [i % 3 - 1, -1, 0], np.int8)
            score = np.arange(4, dtype=np.float32)[:, None] + i
            w.add(gt, cands, lab, score, lq, lq // 2, f"i{i}", 0, 0, 0)
            rows.append({"labels": lab, "scores": score})
    return rows


def paired(gt: torch.Tensor, lq: torch.Tensor) -> bool:
    """LR pixel (r, c) holds the HR coordinates of the SCALE x SCALE block it covers (rounded
    down to the block), whatever flip or rotation was applied to both."""
    block = gt[1:, ::SCALE, ::SCALE] // SCALE * SCALE
    return bool((lq[1:] == block).all())


def test_crops_are_paired_and_scale_aware(tmp_path):
    structured_shards(tmp_path)
    ds = ShardDataset(tmp_path, crop=16, target="original", flip=False, rotate=False)
    torch.manual_seed(0)
    corners = set()
    for i in range(len(ds)):
        s = ds[i]
        assert s["gt"].shape == (3, 16, 16) and s["lq"].shape == (3, 4, 4)
        assert s["gt"].dtype == torch.float32 and 0 <= s["gt"].min() <= s["gt"].max() <= 1
        gt, lq = (s["gt"] * 255).round().long(), (s["lq"] * 255).round().long()
        assert (gt[0] == i).all() and (lq[0] == i).all()
        y0, x0 = int(gt[1, 0, 0]), int(gt[2, 0, 0])
        assert y0 % SCALE == 0 and x0 % SCALE == 0
        assert paired(gt, lq)
        corners.add((y0, x0))
    assert len(corners) > 3                       # crops move


def test_flips_and_rotations_are_shared_by_gt_and_lq(tmp_path):
    structured_shards(tmp_path)
    ds = ShardDataset(tmp_path, target="original")
    torch.manual_seed(1)
    seen = set()
    for _ in range(40):
        s = ds[3]
        gt, lq = (s["gt"] * 255).round().long(), (s["lq"] * 255).round().long()
        assert paired(gt, lq)
        seen.add((int(gt[1, 0, 0]), int(gt[2, 0, 0]), int(gt[1, 0, -1])))
    assert len(seen) >= 6                         # most of the 8 orientations occur


def test_augment_views_match_numpy_rotations():
    a = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    assert (augment(a, (False, False, True))[..., 0] == a[..., 0].T).all()
    assert (augment(a, (True, False, True))[..., 0] == np.rot90(a[..., 0], 1)).all()
    assert (augment(a, (True, True, False))[..., 0] == np.rot90(a[..., 0], 2)).all()


def test_hggt_target_rule_and_negatives(tmp_path):
    labels = [[1, 0, 1], [0, 0, -1], [-1, -1, 0], [1, -1, -1]]
    structured_shards(tmp_path, n=4, labels=labels)
    ds = ShardDataset(tmp_path, crop=8, negatives=True, scores=True, indices=True)
    torch.manual_seed(2)
    picks = {i: set() for i in range(4)}
    for _ in range(30):
        for i in range(4):
            s = ds[i]
            red = int((s["gt"][0, 0, 0] * 255).round())
            k = int(s["target_index"])
            picks[i].add(k)
            assert red == (i if k == 0 else 100 + 10 * (k - 1) + i)
            mask = np.array(labels[i]) == -1
            assert s["negative_mask"].tolist() == mask.tolist()
            assert s["negatives"].shape == (3, 3, 8, 8)
            for j in range(3):
                red_j = (s["negatives"][j, 0] * 255).round()
                assert (red_j == (100 + 10 * j + i if mask[j] else 0)).all()
            assert s["scores"].shape == (4, 1) and float(s["target_scores"][0]) == k + i
    assert picks == {0: {1, 3}, 1: {0}, 2: {0}, 3: {1}}


def test_fixed_target_and_lq_source(tmp_path):
    structured_shards(tmp_path, n=4)
    s = ShardDataset(tmp_path, target="c", lq_source="lq_vqvae", flip=False, rotate=False)[2]
    assert int((s["gt"][0, 0, 0] * 255).round()) == 120 + 2
    assert int((s["lq"][0, 0, 0] * 255).round()) == 2 // 2
    with pytest.raises(ValueError, match="target 'nope'"):
        ShardDataset(tmp_path, target="nope")
    with pytest.raises(ValueError, match="multiple of the scale"):
        ShardDataset(tmp_path, crop=10)


def test_uint8_batches_become_the_float32_batches(tmp_path):
    structured_shards(tmp_path, n=8, per_shard=4, labels=[[1, -1, 0]] * 8)
    kwargs = {"crop": 16, "original": True, "negatives": True, "scores": True, "indices": True}
    batches = {}
    for dtype in ("float32", "uint8"):
        torch.manual_seed(3)                      # same crops, flips and targets
        loader = DataLoader(ShardDataset(tmp_path, dtype=dtype, **kwargs), batch_size=4)
        batches[dtype] = list(loader)
    for f32, u8 in zip(batches["float32"], batches["uint8"], strict=True):
        assert u8["gt"].dtype == u8["negatives"].dtype == torch.uint8
        assert int(u8["gt"][:, 0].max()) > 100    # 0-255 values, not [0,1]
        converted = to_float(u8)
        assert converted.keys() == f32.keys()
        for key, value in f32.items():
            assert converted[key].dtype == value.dtype, key
            assert torch.equal(converted[key], value), key
    assert set(ShardDataset(tmp_path)[0]) == {"gt", "lq"}     # indices are asked for
    with pytest.raises(ValueError, match="dtype 'float16'"):
        ShardDataset(tmp_path, dtype="float16")


@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")
@pytest.mark.parametrize("workers, persistent", [(0, False), (2, True), (4, False)])
def test_dataloader_workers_read_every_sample_once(tmp_path, workers, persistent):
    structured_shards(tmp_path, n=20, per_shard=5)
    ds = ShardDataset(tmp_path, crop=16, target="original", indices=True)
    sampler = ShardBatchSampler(ds, batch_size=3, num_workers=workers, seed=1)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers,
                        persistent_workers=persistent)
    epochs = []
    for epoch in range(2 if persistent else 1):
        sampler.set_epoch(epoch)
        got = []
        for batch in loader:
            red = (batch["gt"][:, 0, 0, 0] * 255).round().long()
            assert red.tolist() == batch["index"].tolist()       # the data of that index
            got += batch["index"].tolist()
        assert sorted(got) == list(range(20))
        epochs.append(got)
    if persistent:
        assert epochs[0] != epochs[1]


def test_sampler_keeps_each_worker_on_its_shards(tmp_path):
    structured_shards(tmp_path, n=48, per_shard=8)     # 6 shards
    ds = ShardDataset(tmp_path)
    sampler = ShardBatchSampler(ds, batch_size=4, num_workers=2, shards_at_a_time=1, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(48))
    assert len(batches) == len(sampler) == 12
    for w in range(2):
        shards_seen = [{i // 8 for i in b} for b in batches[w::2]]
        assert all(len(s) == 1 for s in shards_seen)             # one shard per batch
        order = [next(iter(s)) for s in shards_seen]
        switches = sum(a != b for a, b in zip(order, order[1:], strict=False))
        assert switches == 2                                     # 3 shards, read one by one
    assert list(ShardBatchSampler(ds, 4, 2, seed=3)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_sampler_tail_and_drop_last(tmp_path):
    structured_shards(tmp_path, n=13, per_shard=5)
    ds = ShardDataset(tmp_path)
    keep = list(ShardBatchSampler(ds, batch_size=4, num_workers=2))
    drop = list(ShardBatchSampler(ds, batch_size=4, num_workers=2, drop_last=True))
    assert sorted(i for b in keep for i in b) == list(range(13)) and len(keep) == 4
    assert all(len(b) == 4 for b in drop) and len(drop) == 3
    ordered = list(ShardBatchSampler(ds, batch_size=5, shuffle=False))
    assert ordered == [list(range(0, 5)), list(range(5, 10)), list(range(10, 13))]


# -- the reference trainer in examples/ (reads nothing but the shards) -------------------------
@pytest.fixture(scope="module")
def photo_shards(tmp_path_factory):
    import skimage.data

    from examples.photo_shards import write_photo_shards

    out = tmp_path_factory.mktemp("photos") / "shards"
    photos = [skimage.data.astronaut()[::4, ::4].copy(), skimage.data.coffee()[::3, ::3].copy()]
    write_photo_shards(photos, out, patch=32, step=16, samples_per_shard=32)
    return out


def test_reference_trainer_sr_loss_falls(photo_shards, tmp_path):
    from examples.reference_trainer import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # The stand-in Negatives (strong blur, strong noise) differ from the originals far more
        # than HGGT's, so its weight of 300 would swamp L1 on 40 tiny steps.
        rows = train(photo_shards, tmp_path, task="sr", steps=40, batch=4, crop=32, width=8,
                     neg_weight=30, log_every=10)
        refine = train(photo_shards, tmp_path / "refine", steps=6, batch=4, crop=32, width=8,
                       log_every=3)
    finally:
        torch.set_num_threads(threads)
    assert rows[-1]["held_out_l1"] < 0.8 * rows[0]["held_out_l1"]
    assert any(r["negative"] < 0 for r in rows)           # Negatives were used
    assert (tmp_path / "curve.csv").read_text().count("\n") == 41
    assert (tmp_path / "sr.pt").is_file() and (tmp_path / "refine" / "refine.pt").is_file()
    assert all(np.isfinite(r["loss"]) for r in refine)


def test_hggt_negative_map_and_capped_loss():
    from examples.reference_trainer import hggt_negative_loss, local_variance, negative_map

    r = torch.zeros(1, 1, 5, 5)
    r[0, 0, 2, 2] = 9.0
    assert local_variance(r)[0, 0, 2, 2] == pytest.approx(9.0, rel=1e-5)   # var of 8x0 + 9
    gen = torch.Generator().manual_seed(0)
    original = torch.rand(2, 3, 8, 8, generator=gen)
    negative = original + 0.3 * torch.rand(2, 3, 8, 8, generator=gen)
    positive = original + 0.6 * torch.rand(2, 3, 8, 8, generator=gen)
    both = negative_map(original, positive, negative, torch.tensor([True, False]))
    alone = negative_map(original, original, negative, torch.tensor([False, False]))
    assert (both[1] == alone[1]).all() and (alone > 0).all()
    assert (both[0] < alone[0]).any()                     # the positive masks some pixels
    batch = {"negative_mask": torch.tensor([[False, True], [False, False]]),
             "negatives": torch.stack([torch.stack([original[0], negative[0]])] * 2),
             "original": original, "gt": positive, "target_index": torch.tensor([1, 0])}
    far = negative + 10.0
    capped = hggt_negative_loss(far, batch, gen)
    uncapped = hggt_negative_loss(far, batch, gen, cap=False)
    at_target = hggt_negative_loss(positive, batch, gen)
    assert uncapped < capped == pytest.approx(float(at_target))   # cap: the target's distance
    empty = dict(batch, negative_mask=torch.zeros(2, 2, dtype=torch.bool))
    assert float(hggt_negative_loss(far, empty, gen)) == 0.0
