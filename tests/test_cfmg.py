import json

import cv2
import numpy as np
import pytest
import torch

from models.cfmg import CFMG, cfmg_input
from models.nafblock import NAFBlock
from pipeline.image.conversions import to_tensor
from pipeline.image.fusion import fuse_logits, high_frequency_energy
from pipeline.image.ingest import read_images
from pipeline.quality.iqa import MissingWeightsError, create_metric
from pipeline.quality.judge import VersionRanges
from pipeline.store.imageio import image_path, read_rgb
from pipeline.train import cfmg
from pipeline.train.feed import AlignedCrops, CropBatches
from pipeline.train.schedules import warmup_cosine
from tests.conftest import assert_setting_moves_key, run_tasks

STEPS = 12


def test_cfmg_matches_the_design():
    model = CFMG()
    assert model.intro.in_channels == 7 and model.intro.out_channels == 32
    downs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(d.in_channels, d.out_channels, d.stride) for d in downs] == [
        (32, 64, (2, 2)), (64, 128, (2, 2)), (128, 256, (2, 2)), (256, 512, (2, 2))]
    assert sum(isinstance(m, NAFBlock) for m in model.encoder) == 4
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(512, 100), (100, 100)]
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.2 for m in model.head)
    tiny = CFMG(width=4).eval()
    out = tiny(torch.rand(2, 3, 37, 50), torch.tensor([0.0, 1.0]))  # padded to 48 x 64 inside
    assert out.shape == (2, 4, 25) and torch.isfinite(out).all()
    # BGT: a softmax over the sources per ring before the ring sum (and fusion's after it)
    torch.testing.assert_close(out.sum(1), torch.ones(2, 25))
    raw = CFMG(width=4, source_softmax=False).eval()
    raw.load_state_dict(tiny.state_dict())
    logits = raw(torch.rand(1, 3, 32, 32), torch.tensor([0.5]))
    assert not torch.allclose(logits.sum(1), torch.ones(1, 25))


def test_cfmg_input_shifts_only_the_spatial_axes():
    gt = torch.rand(2, 3, 10, 12)
    x = cfmg_input(gt, torch.tensor([0.25, 0.75]))
    assert x.shape == (2, 7, 10, 12)
    torch.testing.assert_close(x[:, :3], gt)
    assert (x[0, 6] == 0.25).all() and (x[1, 6] == 0.75).all()
    for b in range(2):
        for c in range(3):
            one = torch.fft.fftshift(torch.fft.fft2(gt[b, c], norm="ortho"))
            torch.testing.assert_close(x[b, 3 + c], torch.log10(one.abs() + 1))
    assert x[0, 3, 5, 6].item() == pytest.approx(np.log10(gt[0, 0].sum().item() / 120 ** 0.5 + 1),
                                                 rel=1e-5)  # the DC is at the centre


def test_nafblock_starts_as_identity_and_keeps_shape():
    block = NAFBlock(8, dw_expand=2, ffn_expand=4, drop=0.1).eval()
    x = torch.randn(2, 8, 9, 7)
    torch.testing.assert_close(block(x), x)
    with torch.no_grad():
        block.beta.fill_(1.0)
        block.gamma.fill_(1.0)
    assert block(x).shape == x.shape and not torch.allclose(block(x), x)


def test_warmup_cosine_schedule():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, warmup=4, total=12)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert lrs[8] == pytest.approx(0.5) and lrs[11] < 0.05 and lrs == sorted(lrs[:4]) + lrs[4:]


def test_perceptual_checks_directions_and_missing_weights(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="lower-better.*negative"):
        cfmg.Perceptual({"niqe": 0.1}, "cpu", create_metric)
    monkeypatch.setenv("GTFORGE_IQA_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="musiq"):
        cfmg.Perceptual({"musiq": 0.001}, "cpu", create_metric)


def _sources(photo: np.ndarray) -> list[np.ndarray]:
    """The GT and three versions with more detail (unsharp masking of growing strength):
    stand-ins for SR variants that add high frequencies, which the tiny offline SR does not."""
    blur = cv2.GaussianBlur(photo, (0, 0), 1.0).astype(np.float32)
    out = [photo]
    for amount in (0.5, 1.0, 2.0):
        sharp = photo + amount * (photo.astype(np.float32) - blur)
        out.append(np.clip(np.rint(sharp), 0, 255).astype(np.uint8))
    return out


class FreeWeights(torch.nn.Module):
    """The CFMG's output space, (1, sources, bins) ring weights, as free parameters."""

    def __init__(self):
        super().__init__()
        self.weights = torch.nn.Parameter(torch.zeros(1, 4, 25))

    def forward(self, gt, c):
        return self.weights.expand(len(gt), -1, -1)


def _fitted(batch, c: float, prior: cfmg.Perceptual, clean=None) -> FreeWeights:
    """FreeWeights after STEPS real training steps at condition c on batch(step)."""
    model = FreeWeights()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=1e-2)
    sched = warmup_cosine(opt, warmup=2, total=STEPS)
    for step in range(STEPS):
        logs = cfmg.train_step(model, opt, sched, batch(step), c, prior, 1.0, clean=clean)
        assert np.isfinite(logs["loss"]) and logs["c"] == c
    return model


def test_condition_trades_fidelity_for_detail(sample_corpus):
    """The objective with the offline P (NIQE), optimised by the real training step at each
    end of the condition: at c = 0 the fused image is closer to the GT (higher PSNR) than at
    c = 1, and at c = 1 it has more high-frequency energy than the GT. (A tiny CFMG trained
    for the seconds a test can spend does not yet learn to follow c, so the network's output
    space is optimised directly, once per condition.)"""
    photos = [cv2.cvtColor(cv2.imread(str(sample_corpus / n)), cv2.COLOR_BGR2RGB)
              for n in ("chelsea.png", "astronaut.png")]
    stacks = [_sources(p[:288, :288]) for p in photos]
    perceptual = cfmg.Perceptual({"niqe": -0.002}, "cpu", create_metric)
    full = torch.stack([torch.stack([to_tensor(s)[0] for s in st]) for st in stacks])
    gt = full[:, 0]
    images = {f"{i}_{s}": source for i, st in enumerate(stacks) for s, source in enumerate(st)}
    batches = CropBatches(images, [[f"{i}_{s}" for s in range(len(st))]
                                   for i, st in enumerate(stacks)],
                          AlignedCrops(192, flips=4), 2, "test", stack=True)
    fused = {}
    for c in (0.0, 1.0):
        model = _fitted(batches.__getitem__, c, perceptual)
        fused[c] = fuse_logits(full, cfmg.predict_logits(model, gt, c))
    mse = {c: torch.mean((f - gt) ** 2).item() for c, f in fused.items()}
    assert mse[0.0] < mse[1.0]  # PSNR at c = 0 is higher
    assert high_frequency_energy(fused[1.0]).mean() > 1.2 * high_frequency_energy(gt).mean()


def test_restore_prior_scores_closeness_to_the_clean_crops():
    prior = cfmg.Perceptual({"restore": 2.0}, "cpu", create_metric)
    clean = torch.rand(2, 3, 8, 8)
    off = (clean + 0.1).clamp(0, 1)
    total, raw = prior(off, clean)
    expected = -4 * torch.mean((off - clean) ** 2)
    assert raw["restore"] == pytest.approx(expected.item(), rel=1e-5)
    assert total.item() == pytest.approx(2 * expected.item(), rel=1e-5)
    assert prior(clean, clean)[0].item() == 0
    with pytest.raises(ValueError, match="clean crops"):
        prior(off)
    with pytest.raises(ValueError, match="higher-better.*positive"):
        cfmg.Perceptual({"restore": -1.0}, "cpu", create_metric)


def test_restoration_item_degrades_a_clean_crop_and_sees_past_its_border(sample_corpus):
    photos = [read_rgb(sample_corpus / "chelsea.png")]
    seen = []

    def variants(x):
        seen.append(x)
        return [x // 2, x // 3]

    ranges = VersionRanges(p=1.0)  # blur, noise and JPEG, every time
    item = cfmg.restoration_item(photos, 48, 8, (0.5, 0.5), ranges, variants,
                                 np.random.default_rng(3))
    assert item.shape == (4, 48, 48, 3) and item.dtype == np.uint8
    given, clean = seen[0], item[-1]
    assert given.shape == (64, 64, 3)  # the variants see the border, the item leaves it out
    np.testing.assert_array_equal(item[0], given[8:56, 8:56])
    np.testing.assert_array_equal(item[1], (given // 2)[8:56, 8:56])
    assert cv2.PSNR(item[0], clean) < 40  # the input is a degraded version of the clean crop
    again = cfmg.restoration_item(photos, 48, 8, (0.5, 0.5), ranges, variants,
                                  np.random.default_rng(3))
    np.testing.assert_array_equal(again, item)


def test_condition_trades_fidelity_for_restoration(sample_corpus):
    """With the restore prior, the real training step at each end of the condition: at c = 0
    the fused image stays at the GT, at c = 1 it moves to the clean crop, here one of the
    sources (the network's output space optimised directly, as above)."""
    photo = cv2.cvtColor(cv2.imread(str(sample_corpus / "astronaut.png")), cv2.COLOR_BGR2RGB)
    clean = photo[:192, :192]
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 12, clean.shape), 0, 255)
    stack = [noisy.astype(np.uint8), clean, cv2.GaussianBlur(clean, (0, 0), 2.0), clean // 2]
    sources = torch.stack([to_tensor(x)[0] for x in stack])[None]
    prior = cfmg.Perceptual({"restore": 1.0}, "cpu", create_metric)
    distance = {}
    for c in (0.0, 1.0):
        model = _fitted(lambda _: sources, c, prior, clean=sources[:, 1])
        fused = fuse_logits(sources, cfmg.predict_logits(model, sources[:, 0], c))
        distance[c] = {name: torch.mean((fused - sources[:, k]) ** 2).item()
                       for name, k in (("gt", 0), ("clean", 1))}
    assert distance[0.0]["gt"] < distance[0.0]["clean"]
    assert distance[1.0]["clean"] < distance[1.0]["gt"]
    assert distance[1.0]["clean"] < 0.5 * distance[0.0]["clean"]


@pytest.mark.parametrize("prior", ['{"restore": 10.0}', '{"niqe": -0.002}'])
def test_fuse_gt_end_to_end(build_env, sample_corpus, tmp_path, prior):
    """TrainSR (on DegradeLR pairs) -> SuperResolveGT x2/x3/x4 -> TrainMaskGenerator -> FuseGT,
    shrunk to a few steps on two small photos: the plumbing, not the quality. With the restore
    prior the CFMG trains on restoration items made by the SR model, otherwise on the photos'
    own variants."""
    from pipeline.image import band_weights
    from tasks.candidates import candidate_stage
    from tasks.fuse import FuseGT
    from tests.test_sr import _small_corpus

    build_env.set("gtforge", "input_dir", _small_corpus(tmp_path, sample_corpus))
    build_env.set("tiny.TrainSR", "iterations", 2)
    build_env.set("tiny.TrainSR", "crop", 16)
    build_env.set("tiny.TrainMaskGenerator", "iterations", 2)
    build_env.set("tiny.TrainMaskGenerator", "batch_size", 2)
    build_env.set("tiny.TrainMaskGenerator", "metrics", prior)
    build_env.set("tiny.TrainMaskGenerator", "crop", 192)  # NIQE's least
    task = FuseGT()
    assert candidate_stage("fused").key == task.key
    run_tasks(task)
    hr_dir = task.input_dir("gt")
    ids = [img.id for img in read_images(hr_dir)]
    for image_id in ids:
        fused = read_rgb(image_path(task.out_dir, image_id))
        assert fused.shape == read_rgb(image_path(hr_dir, image_id)).shape
    weights = np.load(task.out_dir / band_weights.NPZ)
    assert list(weights["image_id"]) == ids and weights["weights"].shape == (len(ids), 4, 25)
    np.testing.assert_allclose(weights["weights"].sum(1), 1, atol=1e-5)
    report = band_weights.load(task.out_dir)
    assert report["c"] == 0.3 and set(report["images"][ids[0]]) == {"gt", "sr_x2", "sr_x3",
                                                                    "sr_x4"}
    assert (task.out_dir / band_weights.PNG).stat().st_size > 0
    manifest = json.loads((task.input_dir("cfmg") / "manifest.json").read_text())
    assert manifest["info"]["final"]["step"] == 1
    trained_on = set(manifest["inputs"])
    if "restore" in prior:
        assert "sr" in trained_on and "sr_x2:0" not in trained_on
        assert manifest["info"]["final"]["restore"] <= 0
    else:
        assert "sr_x2:0" in trained_on and "sr" not in trained_on


def test_keys_follow_each_setting(build_env):
    from tasks.fuse import FuseGT
    from tasks.mask_generator import TrainMaskGenerator

    for name, value in [("iterations", 7), ("batch_size", 3), ("crop", 64), ("lr", 0.01),
                        ("weight_decay", 0.1), ("warmup", 3), ("grad_clip", 0.5),
                        ("model", '{"width": 4}'), ("restoration_crops", 5),
                        ("shrink", "[0.3, 0.6]"), ("versions", '{"blur": [0.5, 1.0]}')]:
        assert_setting_moves_key(build_env, TrainMaskGenerator, "TrainMaskGenerator", name, value)
    base = TrainMaskGenerator().key
    build_env.set("SuperResolveGT", "keep_low", 2.0)  # the items' variants are made with it
    assert TrainMaskGenerator().key != base
    base = TrainMaskGenerator().key
    build_env.set("TrainMaskGenerator", "ckpt_every", 3)
    assert TrainMaskGenerator().key == base
    build_env.set("TrainMaskGenerator", "metrics", '{"niqe": -1.0}')
    assert TrainMaskGenerator().key != base
    fused = FuseGT().key
    assert fused == FuseGT(c=0.3).key != FuseGT(c=1.0).key
    build_env.set("TrainSR", "iterations", 5)  # an upstream change moves the key
    assert FuseGT().key != fused


def test_fuse_photo_per_channel_equals_the_batched_fusion():
    from pipeline.image.conversions import to_images
    from pipeline.image.fusion import fuse_photo

    gen = np.random.default_rng(5)
    sources = [gen.integers(0, 256, (45, 62, 3), dtype=np.uint8) for _ in range(4)]
    logits = torch.softmax(torch.randn(1, 4, 25), dim=1) * 3
    batched = fuse_logits(torch.stack([to_tensor(s)[0] for s in sources])[None], logits)
    assert np.abs(fuse_photo(sources, logits).astype(int) - to_images(batched)[0]).max() <= 1


def test_masks_come_from_views_of_the_training_crop_size():
    """The CFMG sees only crop x crop windows of a photo, whatever its size, so a photo of the
    same texture 4x larger gets about the same masks (the whole-image model saw a spectrum
    whose DC and pooled features grow with the photo)."""
    torch.manual_seed(0)
    model = CFMG(width=8, sources=4).eval()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    gen = np.random.default_rng(0)
    small, large = (cv2.GaussianBlur(gen.integers(0, 256, (s, s + 40, 3), dtype=np.uint8),
                                     (0, 0), 1.5) for s in (160, 640))
    a = cfmg.predict_photo(model, small, 0.3, crop=128, views=3)
    b = cfmg.predict_photo(model, large, 0.3, crop=128, views=3, batch=4)
    assert set(seen) == {(128, 128)} and len(seen) == 2 + 3  # 9 windows in 2 passes, then 9 in 3
    assert a.shape == (1, 4, 25) and (a - b).abs().max() < 0.02
    tiny = cfmg.predict_photo(model, small[:100, :90], 0.3, crop=128)  # smaller: seen whole
    assert tiny.shape == (1, 4, 25) and seen[-1] == (100, 90)


def test_fuse_crops_fuses_crops_as_fusegt_fuses_photos(sample_corpus):
    photo = read_rgb(sample_corpus / "chelsea.png")
    crops = np.stack([photo[:80, :80], photo[100:180, 200:280]])
    model = FreeWeights()
    with torch.no_grad():
        model.weights[:, 1] = 50.0  # every ring from the first variant
    variants = np.stack([[x // s for s in (2, 3, 4)] for x in crops])
    out = cfmg.fuse_crops(model, crops, variants, 0.3, 128)
    assert out.shape == crops.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - crops // 2).max() <= 1


def test_judge_learns_the_fused_gt_from_the_cfmg(build_env, sample_corpus, tmp_path):
    """With the fused candidate, TrainJudge's pool holds the CFMG's fusions of its inputs at
    FuseGT's c (which enters its key), so the neighbours annotator has a table and margins for
    fused."""
    from tasks.train_judge import CALIBRATION_JSON, TrainJudge
    from tests.test_sr import _small_corpus

    build_env.set("gtforge", "input_dir", _small_corpus(tmp_path, sample_corpus))
    build_env.set("gtforge", "candidates", "fused")
    build_env.set("tiny.TrainSR", "iterations", 2)
    build_env.set("tiny.TrainSR", "crop", 16)
    build_env.set("tiny.TrainMaskGenerator", "iterations", 2)
    build_env.set("tiny.TrainMaskGenerator", "batch_size", 2)
    judge = TrainJudge()
    assert "fused" in judge.requires() and judge.requires()["pool"].generators == ("fused",)
    run_tasks(judge)
    pool = judge.requires()["pool"]
    variants, inputs = pool.column("variants"), pool.column("inputs")
    assert variants.shape == (len(inputs), 3, *inputs.shape[1:])  # x2, x3, x4
    calibration = json.loads((judge.out_dir / CALIBRATION_JSON).read_text())
    assert set(calibration["neighbour_margins"]) == {"fused"}
    assert "fused" in judge.gain_table().statistics
    build_env.set("FuseGT", "c", 0.5)
    assert TrainJudge().key != judge.key
