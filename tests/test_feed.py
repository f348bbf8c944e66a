import json

import cv2
import numpy as np
import pytest
import torch

from pipeline.store.seeding import rng
from pipeline.train.enhancer import DegradedPairs
from pipeline.train.feed import AlignedCrops, ArrayStore, CropBatches, Feed
from pipeline.train.loop import load_checkpoint
from pipeline.train.sr import SecondOrderCrops
from tasks.degrade import load_recipe
from tests.conftest import run_tasks


@pytest.fixture(scope="module")
def photos():
    return {f"p{i}": rng("feed-photo", i).integers(0, 256, (70 + 9 * i, 90, 3), dtype=np.uint8)
            for i in range(3)}


def test_array_store_maps_what_it_wrote_and_keeps_a_complete_copy(tmp_path, photos):
    store = ArrayStore(tmp_path / "arrays")
    assert store.put("p0", lambda: photos["p0"]) == photos["p0"].shape
    mapped = store.get("p0")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, photos["p0"])
    assert store.put("p0", lambda: pytest.fail("a complete copy is not written again"))
    with pytest.raises(ValueError, match="p1: expected uint8"):
        store.put("p1", lambda: photos["p1"].astype(np.float32))


def test_aligned_crops_keep_an_lr_and_its_hr_aligned_under_every_flip():
    hr = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    lr = cv2.resize(hr, (20, 16), interpolation=cv2.INTER_AREA)
    batches = CropBatches({"lr": lr, "hr": hr}, [["lr", "hr"]], AlignedCrops(6), 16, "pairs")
    lrs, hrs = batches[0]
    assert lrs.shape == (16, 3, 6, 6) and hrs.shape == (16, 3, 24, 24)
    down = torch.nn.functional.avg_pool2d(hrs, 4)  # the same box filter as INTER_AREA
    assert (down - lrs).abs().max() <= 1.01 / 255


def test_a_batch_depends_on_its_step_alone(photos, tmp_path):
    """Workers, their number and the step a loader starts at change nothing: what a resumed
    run is fed equals what an uninterrupted one was."""
    store = ArrayStore(tmp_path / "arrays")
    for name, image in photos.items():
        store.put(name, lambda image=image: image)
    pairs = DegradedPairs(24, load_recipe("noise"))
    batches = CropBatches(store, [[n] for n in photos], pairs, 3, "seed")
    alone = [batches[i] for i in range(6)]
    with_workers = Feed(batches, 6, workers=2)
    resumed = [with_workers(i) for i in range(6)] + [with_workers(i) for i in (3, 4, 5)]
    for got, want in zip(resumed, alone + alone[3:], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert not torch.equal(alone[0][0], alone[1][0])


def test_degraded_pairs_draw_a_fresh_degradation_for_every_sample(photos):
    flat = np.full((80, 80, 3), 128, np.uint8)  # only the noise tells two draws apart
    degraded, clean = CropBatches({"f": flat}, [["f"]], DegradedPairs(32, load_recipe("noise")),
                                  8, "fresh")[0]
    assert degraded.shape == clean.shape == (8, 3, 32, 32)
    assert (clean == 128 / 255).all()
    noise = (degraded - clean).flatten(1).std(1)
    assert len(set(noise.tolist())) == 8 and noise.max() > 1.5 * noise.min()
    with pytest.raises(ValueError, match="final_scale = 1"):
        DegradedPairs(32, load_recipe("sr"))


def test_second_order_degrades_the_lr_crop_only():
    hr = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    lr = cv2.resize(hr, (16, 16), interpolation=cv2.INTER_AREA)
    images, groups = {"lr": lr, "hr": hr}, [["lr", "hr"]]
    plain = CropBatches(images, groups, SecondOrderCrops(8), 4, "s")[0]
    second = CropBatches(images, groups, SecondOrderCrops(8, [load_recipe("blur")]), 4, "s")[0]
    assert torch.equal(plain[1], second[1]) and not torch.equal(plain[0], second[0])


def test_trainings_resume_bit_identically_with_workers(build_env, tmp_path, monkeypatch):
    """TrainEnhancer fed by 2 DataLoader workers with a fresh degradation per sample, killed
    after its first checkpoint and rerun, ends with the weights of an uninterrupted run."""
    from pipeline.train import feed
    from tasks.train_enhancer import GENERATOR_FILE, TrainEnhancer

    for name, value in (("iterations", 5), ("ckpt_every", 2), ("loader_workers", 2)):
        build_env.set("tiny.TrainEnhancer", name, value)

    def trained(workdir, kill_at=None):
        build_env.set("gtforge", "workdir", workdir)
        stage = TrainEnhancer(backbone="rcan", degradation="blur")
        if kill_at is not None:
            real = feed.Feed.__call__

            def dying(self, step):
                if step == kill_at:
                    raise RuntimeError("killed")
                return real(self, step)

            monkeypatch.setattr(feed.Feed, "__call__", dying)
            with pytest.raises(AssertionError, match="failed"):
                run_tasks(stage)
            assert sorted(p.name for p in (stage.partial_dir / "checkpoints").glob("*.pt")) == \
                ["step-00000002.pt"]
            monkeypatch.setattr(feed.Feed, "__call__", real)
        run_tasks(stage)
        info = json.loads((stage.out_dir / "manifest.json").read_text())["info"]
        assert not (stage.out_dir / "arrays").exists() and info["images"] > 0
        return load_checkpoint(stage.out_dir / GENERATOR_FILE)

    whole, resumed = trained(tmp_path / "whole"), trained(tmp_path / "resumed", kill_at=3)
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
