import json
import math
import shutil

import luigi
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.models.vgg import cfgs, make_layers

from pipeline.image.ingest import read_images
from pipeline.store.imageio import image_path, read_rgb
from pipeline.store.seeding import rng
from pipeline.train.curve import CURVE_CSV, read_curve
from pipeline.train.enhancer import EnhancerTraining, build_generator, build_training
from pipeline.train.feed import AlignedCrops, CropBatches
from pipeline.train.loop import (
    NonFiniteLoss,
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    train_loop,
)
from pipeline.train.loss_settings import LossWeights, MissingVGGWeights
from pipeline.train.losses import PerceptualLoss, gan_loss, load_vgg19, vgg19_features
from pipeline.train.schedules import learning_rate
from tasks.config import section
from tests.conftest import SMALL_CORPUS, assert_setting_moves_key, run_tasks

# A narrow VGG19 (same layers, same torchvision key layout, widths / 8 or less).
NARROW_VGG19 = [4, 4, "M", 8, 8, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M"]
MICRO = {"rcan": {"n_feats": 8, "n_groups": 1, "n_blocks": 2, "reduction": 4},
         "elan": {"channels": 12, "blocks": 2, "windows": [4, 8, 16], "expansion": 2}}


@pytest.fixture(scope="module")
def pairs(small_corpus):
    """(clean, noisy) uint8 pairs of the small sample corpus (Gaussian noise, sigma 10)."""
    out = []
    for name in SMALL_CORPUS:
        clean = read_rgb(small_corpus / name)
        noisy = clean + rng("test-noise", name).normal(0, 10, clean.shape)
        out.append((clean, np.clip(noisy, 0, 255).round().astype(np.uint8)))
    return out


def _batch(pairs, seed, step, n, crop):
    """Batch `step` of aligned (noisy, clean) crops of the pairs: float (n,3,crop,crop)."""
    images = {f"{kind}{i}": image for i, (clean, noisy) in enumerate(pairs)
              for kind, image in (("d", noisy), ("c", clean))}
    groups = [[f"d{i}", f"c{i}"] for i in range(len(pairs))]
    return CropBatches(images, groups, AlignedCrops(crop), n, seed)[step]


def _narrow_vgg_state():
    torch.manual_seed(0)
    net = make_layers(NARROW_VGG19)
    state = {f"features.{k}": v for k, v in net.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision's file has a classifier too
    return net, state


def test_vgg19_loads_a_torchvision_file(tmp_path):
    net, state = _narrow_vgg_state()
    torch.save(state, tmp_path / "vgg19.pth")
    features = load_vgg19(tmp_path / "vgg19.pth")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(features(x), net[:35](x), atol=1e-6)  # conv5_4, before its ReLU
    assert not any(p.requires_grad for p in features.parameters())


def test_vgg19_builds_torchvision_widths():
    state = {f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}
    features = vgg19_features(state)
    assert features[34].weight.shape == (512, 512, 3, 3) and len(features) == 35


def test_vgg19_file_problems_are_named(tmp_path):
    with pytest.raises(MissingVGGWeights, match=r"nope\.pth.*vgg19-dcbb9e9d\.pth"):
        load_vgg19(tmp_path / "nope.pth")
    _, state = _narrow_vgg_state()
    del state["features.16.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"cut\.pth: no features\.16\.weight/bias \(conv3_4\)"):
        load_vgg19(tmp_path / "cut.pth")


def test_perceptual_loss_uses_the_layer_weights():
    _, state = _narrow_vgg_state()
    features = vgg19_features(state)
    x = torch.rand(2, 3, 32, 32)
    y = (x + 0.1 * torch.randn_like(x)).requires_grad_()
    full = PerceptualLoss(features)
    assert float(full(x, x)) == 0.0
    loss = full(y, x)
    loss.backward()
    assert loss > 0 and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    only = PerceptualLoss(features, {"conv1_2": 0.5})
    norm = lambda t: (t - only.mean) / only.std  # noqa: E731
    expected = 0.5 * F.l1_loss(features[:3](norm(y)), features[:3](norm(x)))
    assert torch.allclose(only(y, x), expected)
    with pytest.raises(ValueError, match="unknown VGG19 layers"):
        PerceptualLoss(features, {"relu1_1": 1.0})


def test_gan_loss_and_lr_schedule():
    at_zero = float(gan_loss(torch.zeros(2, 1, 4, 4), real=True))
    assert math.isclose(at_zero, math.log(2), rel_tol=1e-6)
    assert float(gan_loss(torch.full((1, 1, 2, 2), 20.0), real=True)) < 1e-6
    assert float(gan_loss(torch.full((1, 1, 2, 2), 20.0), real=False)) > 19
    assert learning_rate(1e-4, 199_999, [200_000]) == 1e-4
    assert learning_rate(1e-4, 200_000, [200_000]) == 5e-5
    assert learning_rate(1e-4, 5, [2, 4]) == 2.5e-5


def test_step_with_perceptual_and_without_gan(pairs):
    _, state = _narrow_vgg_state()
    perceptual = PerceptualLoss(vgg19_features(state))
    training = build_training("rcan", MICRO["rcan"], {"n_feats": 8}, perceptual,
                              LossWeights(gan=0.0), 1e-4, [10], seed=0)
    d_before = {k: v.clone() for k, v in training.discriminator.state_dict().items()}
    losses = training.step(0, *_batch(pairs, "b", 0, 2, 32))
    assert set(losses) == {"l1", "perceptual"} and all(map(math.isfinite, losses.values()))
    assert all(torch.equal(v, training.discriminator.state_dict()[k]) for k, v in d_before.items())


@pytest.mark.parametrize("backbone", ["rcan", "elan"])
def test_tiny_enhancer_l1_falls(backbone, pairs):
    tiny = section("tiny.TrainEnhancer")
    training = build_training(backbone, json.loads(tiny[backbone]),
                              json.loads(tiny["discriminator"]), None, LossWeights(),
                              float(tiny["lr"]), [1000], seed=0)
    held_out = _batch(pairs, "eval", 0, 8, 64)

    def held_out_l1() -> float:
        with torch.no_grad():
            return float(F.l1_loss(training.generator.eval()(held_out[0]), held_out[1]))

    before = held_out_l1()  # the untrained generator is the identity: the noise's L1
    curve = [training.step(i, *_batch(pairs, "train", i, 4, 32))["l1"] for i in range(30)]
    assert np.mean(curve[-5:]) < 0.95 * np.mean(curve[:5])
    assert held_out_l1() < before


def _train(backbone, ckpt_dir, pairs, total, kill_at=None, poison_at=None):
    training = build_training(backbone, MICRO[backbone], {"n_feats": 8}, None, LossWeights(),
                              5e-4, [3], seed=1)

    def step(i):
        if i == kill_at:
            raise KeyboardInterrupt  # the process dies between checkpoints
        degraded, clean = _batch(pairs, "batch", i, 2, 32)
        if i == poison_at:
            degraded[0, 0, 0, 0] = float("nan")  # a corrupt batch
        return training.step(i, degraded, clean)

    rows = train_loop(step, TrainState(training.state_dict, training.load_state_dict), total,
                      ckpt_dir, ckpt_every=2, seed=7)
    return training, rows


def _assert_same_state(a, b):
    for part in ("generator", "discriminator"):
        sa, sb = a[part], b[part]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{part}.{k}"
    for part in ("opt_g", "opt_d"):
        for sa, sb in zip(a[part]["state"].values(), b[part]["state"].values(), strict=True):
            assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("backbone", ["rcan", "elan"])
def test_killed_run_resumes_to_the_same_weights(backbone, pairs, tmp_path):
    whole, rows = _train(backbone, tmp_path / "whole", pairs, total=6)
    with pytest.raises(KeyboardInterrupt):
        _train(backbone, tmp_path / "killed", pairs, total=6, kill_at=3)
    assert latest_checkpoint(tmp_path / "killed").name == "step-00000002.pt"
    resumed, resumed_rows = _train(backbone, tmp_path / "killed", pairs, total=6)
    _assert_same_state(whole.state_dict(), resumed.state_dict())
    assert resumed_rows == rows and len(rows) == 6


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(pairs, tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"step 5.*step-00000004\.pt"):
        _train("rcan", tmp_path, pairs, total=8, poison_at=5)
    assert latest_checkpoint(tmp_path).name == "step-00000004.pt"
    kept = load_checkpoint(latest_checkpoint(tmp_path))["state"]["generator"]
    assert all(torch.isfinite(v).all() for v in kept.values())
    assert [r["step"] for r in read_curve(tmp_path / CURVE_CSV)] == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- stages


@pytest.fixture
def odd_corpus(small_corpus, tmp_path, build_env):
    """Two photos cropped to odd sizes, as the build input."""
    folder = tmp_path / "odd"
    folder.mkdir()
    for name, (h, w) in [("chelsea.png", (131, 203)), ("coffee.png", (145, 129))]:
        Image.fromarray(read_rgb(small_corpus / name)[:h, :w]).save(folder / name)
    build_env.set("gtforge", "input_dir", folder)
    return folder


def _stages(backbone, degradation):
    from tasks.enhance import EnhanceHR

    enhance = EnhanceHR(backbone=backbone, degradation=degradation)
    return enhance, enhance.requires()["model"]


@pytest.mark.parametrize("backbone,degradation,vgg", [("rcan", "noise", False),
                                                      ("elan", "blur", True)])
def test_train_and_enhance_stages(backbone, degradation, vgg, build_env, odd_corpus, tmp_path):
    from tasks.train_enhancer import GENERATOR_FILE, NO_VGG_WARNING

    if vgg:  # the perceptual term from a (narrow) torchvision-format VGG19 file
        torch.save(_narrow_vgg_state()[1], tmp_path / "vgg19.pth")
        build_env.set("TrainEnhancer", "vgg19_weights", tmp_path / "vgg19.pth")
    for section_name in ("tiny.TrainEnhancer", f"tiny.TrainEnhancer.{backbone}"):
        build_env.set(section_name, "iterations", 3)
        build_env.set(section_name, "ckpt_every", 2)
    build_env.set("EnhanceHR", "tile", 64)  # several tiles per image
    build_env.set("EnhanceHR", "overlap", 16)
    enhance, train = _stages(backbone, degradation)
    run_tasks(enhance)
    assert sorted(p.name for p in train.out_dir.iterdir()) == [
        CURVE_CSV, "curve.png", GENERATOR_FILE, "manifest.json"]
    generator = build_generator(backbone, json.loads(section("tiny.TrainEnhancer")[backbone]))
    generator.load_state_dict(load_checkpoint(train.out_dir / GENERATOR_FILE))  # plain state dict
    curve = read_curve(train.out_dir / CURVE_CSV)
    assert len(curve) == 3 and ("perceptual" in curve[0]) == vgg
    info = json.loads((train.out_dir / "manifest.json").read_text())["info"]
    if vgg:
        assert info["warnings"] == [] and info["perceptual"] == str(tmp_path / "vgg19.pth")
    else:
        assert info["warnings"] == [NO_VGG_WARNING] and info["perceptual"] is None
    hr_dir = enhance.requires()["hr"].out_dir
    for img in read_images(hr_dir):
        out = read_rgb(image_path(enhance.out_dir, img.id))
        assert out.shape == (img.height, img.width, 3) and img.width % 2 == 1


def test_killed_stage_resumes_from_its_partial_folder(build_env, odd_corpus, tmp_path,
                                                      monkeypatch):
    build_env.set("tiny.TrainEnhancer", "iterations", 4)
    build_env.set("tiny.TrainEnhancer", "ckpt_every", 2)
    build_env.set("tiny.TrainEnhancer", "rcan", json.dumps(MICRO["rcan"]))
    build_env.set("tiny.TrainEnhancer", "crop", 32)
    _, train = _stages("rcan", "noise")
    real_step = EnhancerTraining.step

    def dies_at_3(self, i, degraded, clean):
        if i == 3:
            raise RuntimeError("killed")
        return real_step(self, i, degraded, clean)

    monkeypatch.setattr(EnhancerTraining, "step", dies_at_3)
    assert not luigi.build([train], local_scheduler=True)
    assert latest_checkpoint(train.partial_dir / "checkpoints").name == "step-00000002.pt"
    monkeypatch.setattr(EnhancerTraining, "step", real_step)
    run_tasks(train)
    resumed = load_checkpoint(train.out_dir / "generator.pt")

    build_env.set("gtforge", "workdir", tmp_path / "uninterrupted")
    _, again = _stages("rcan", "noise")
    run_tasks(again)
    assert again.key == train.key and again.out_dir.parents[1] == tmp_path / "uninterrupted"
    whole = load_checkpoint(again.out_dir / "generator.pt")
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


# values unlike the tiny preset's own
TRAIN_CHANGES = {"iterations": 7, "milestones": "[5]", "batch_size": 2, "crop": 32, "lr": 0.002,
                 "discriminator": '{"n_feats": 8}', "losses": '{"l1": 1.0, "perceptual": 1.0, '
                 '"gan": 0.05}', "perceptual_layers": '{"conv5_4": 1.0}'}


@pytest.mark.parametrize("name,value", TRAIN_CHANGES.items())
def test_each_training_setting_changes_the_keys(build_env, name, value):
    base = [stage.key for stage in _stages("rcan", "noise")]
    build_env.set("TrainEnhancer", name, value)
    changed = [stage.key for stage in _stages("rcan", "noise")]
    assert changed[0] != base[0] and changed[1] != base[1]


def test_backbone_sizes_and_choices_change_only_their_keys(build_env):
    keys = {(b, d): _stages(b, d)[1].key for b in ("rcan", "elan") for d in ("noise", "blur")}
    assert len(set(keys.values())) == 4
    build_env.set("TrainEnhancer", "elan", json.dumps(MICRO["elan"]))
    assert _stages("elan", "noise")[1].key != keys["elan", "noise"]
    assert _stages("rcan", "noise")[1].key == keys["rcan", "noise"]  # not its size
    build_env.set("TrainEnhancer", "ckpt_every", 3)  # how often to save changes nothing
    assert _stages("rcan", "noise")[1].key == keys["rcan", "noise"]


@pytest.mark.parametrize("name,value", [("tile", 96), ("overlap", 8)])
def test_each_inference_setting_changes_the_key(build_env, name, value):
    assert_setting_moves_key(build_env, lambda: _stages("rcan", "noise")[0], "EnhanceHR", name,
                             value)


def test_vgg19_file_content_enters_the_key(build_env, tmp_path):
    base = _stages("rcan", "noise")[1].key
    build_env.set("TrainEnhancer", "vgg19_weights", tmp_path / "missing.pth")
    with pytest.raises(MissingVGGWeights, match="missing.pth"):
        _stages("rcan", "noise")[1].key  # noqa: B018
    _, state = _narrow_vgg_state()
    torch.save(state, tmp_path / "a.pth")
    shutil.copyfile(tmp_path / "a.pth", tmp_path / "b.pth")
    build_env.set("TrainEnhancer", "vgg19_weights", tmp_path / "a.pth")
    with_vgg = _stages("rcan", "noise")[1].key
    build_env.set("TrainEnhancer", "vgg19_weights", tmp_path / "b.pth")  # same content
    assert with_vgg != base and _stages("rcan", "noise")[1].key == with_vgg
