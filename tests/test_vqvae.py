import json

import numpy as np
import pytest
import skimage.data
import torch

from models.vqvae2 import VQVAE2, Quantize
from pipeline.image.ingest import read_images
from pipeline.quality import lr_stats
from pipeline.store.imageio import image_path, read_rgb
from pipeline.train import vqvae as vq
from pipeline.train.feed import AlignedCrops, CropBatches
from pipeline.train.loop import load_checkpoint
from tasks.ingest import IngestHR
from tasks.train_vqvae import TrainVQVAE2
from tasks.vqvae_degrade import VQVAEDegradeLR
from tests.conftest import assert_setting_moves_key, run_tasks

MICRO = {"channel": 16, "n_res_block": 1, "n_res_channel": 8, "embed_dim": 8, "n_embed": 16,
         "decay": 0.99, "data_init": True}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Micro models run fastest on one thread (and two threads crawl on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def micro_model(**kw) -> VQVAE2:
    torch.manual_seed(0)
    return VQVAE2(**{**MICRO, **kw})


# ---------------------------------------------------------------- model

def test_reconstructs_any_size_with_code_maps():
    model = micro_model().eval()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    recon, commitment, (top, bottom) = model(x)
    assert recon.shape == x.shape and commitment.ndim == 0
    assert top.shape == (2, 4, 6) and bottom.shape == (2, 8, 12)
    odd = torch.rand(1, 3, 37, 50) * 2 - 1  # reflect-padded to 40x56, cropped back
    recon, _, (top, bottom) = model(odd)
    assert recon.shape == odd.shape and top.shape == (1, 5, 7) and bottom.shape == (1, 10, 14)


def test_decay_reaches_both_quantisers():
    model = VQVAE2(**{**MICRO, "decay": 0.5})
    assert model.quantize_t.decay == model.quantize_b.decay == 0.5


def test_ema_moves_used_codes_to_their_mean_and_eval_freezes_them():
    torch.manual_seed(0)
    q = Quantize(dim=4, n_embed=8, decay=0.0).train()
    x = q.embed[:, :2].t().repeat(5, 1) + 0.1 * torch.randn(10, 4)  # near codes 0 and 1
    _, _, codes = q(x)
    for c in codes.unique():  # decay 0: a used code becomes the mean of its vectors
        torch.testing.assert_close(q.embed[:, c], x[codes == c].mean(0), rtol=1e-3, atol=1e-3)
    q.eval()
    frozen = q.embed.clone()
    q(x + 1)
    assert torch.equal(q.embed, frozen)


def test_ema_decay_moves_used_codes_partly_and_keeps_unused_ones():
    torch.manual_seed(0)
    q = Quantize(dim=4, n_embed=8, decay=0.9).train()
    before = q.embed.clone()
    x = before[:, 0].expand(6, 4) + 0.2
    _, _, codes = q(x)
    assert codes.unique().tolist() == [0]
    moved = (q.embed[:, 0] - before[:, 0]).norm()
    assert 0 < moved < 0.9 * (x[0] - before[:, 0]).norm()
    # the reference (counts starting at 0) would send these ~1e5 times further out
    torch.testing.assert_close(q.embed[:, 1:], before[:, 1:], rtol=1e-3, atol=1e-4)


def test_data_init_takes_codes_from_the_first_batch():
    q = Quantize(dim=4, n_embed=8, decay=0.99, data_init=True).train()
    x = torch.randn(50, 4) * 0.01 + 3.0
    q(x)
    assert not q.pending_init and (q.embed - 3.0).abs().max() < 0.1
    assert Quantize(4, 8).pending_init.item() is False


def test_straight_through_gradient_reaches_the_encoder():
    model = micro_model()
    recon, commitment, _ = model(torch.rand(1, 3, 16, 16) * 2 - 1)
    (recon.mean() + commitment).backward()
    assert model.enc_b.blocks[0].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- training

@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return vq.downsample(skimage.data.astronaut(), 2)  # 256x256 uint8


def test_loss_falls_within_a_few_dozen_steps(photo):
    model = micro_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    (x,) = CropBatches({"p": photo}, [["p"]], AlignedCrops(32, flips=4), 4, 0)[0]
    x = x * 2 - 1  # one fixed batch
    losses = [vq.train_step(model, opt, x)[0]["loss"] for _ in range(40)]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_through_the_hr_photo_a_blurring_model_keeps_the_content(photo):
    """An undertrained model blurs at the scale it sees: passed the HR photo, its blur shrinks
    4x with the downsampling, so the LR stays closer to the clean LR than when it is passed the
    clean LR itself."""
    model = micro_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(300):  # 2 s; the LR passed through is then about 16 dB, the HR 23 dB
        (x,) = CropBatches({"p": photo}, [["p"]], AlignedCrops(32, flips=4), 8, 0)[i]
        vq.train_step(model, opt, x * 2 - 1)
    hr = photo[:250, :246]
    distance = {}
    for at in vq.RECONSTRUCT_AT:
        clean, lr = vq.degraded_lr(model, hr, 4, at)
        assert lr.shape == clean.shape == (62, 61, 3)
        distance[at] = lr_stats.image_stats(clean, lr)["psnr"]
    assert distance["hr"] > distance["lr"] + 3, distance
    with pytest.raises(ValueError, match="reconstruct_at"):
        vq.degraded_lr(model, hr, 4, "mid")


def test_epoch_stats_count_dead_codes_and_perplexity():
    stats = vq.EpochStats(n_embed=4)
    codes = (torch.tensor([0, 0, 1, 1]), torch.tensor([2, 2, 2, 2]))
    stats.add({"mse": 1.0, "commitment": 0.5}, codes)
    stats.add({"mse": 3.0, "commitment": 0.5}, codes)
    row = stats.row(1)
    assert row["mse"] == 2.0 and row["commitment"] == 0.5
    assert row["perplexity_top"] == pytest.approx(2.0) and row["dead_top"] == 2
    assert row["perplexity_bottom"] == pytest.approx(1.0) and row["dead_bottom"] == 3
    restored = vq.EpochStats(4)
    restored.load(stats.state())
    assert restored.row(1) == row


# ---------------------------------------------------------------- degradation and colour

def test_downsample_crops_to_multiples_and_reduces(photo):
    lr = vq.downsample(photo[:203, :250], 4)
    assert lr.shape == (50, 62, 3) and lr.dtype == np.uint8
    assert abs(float(lr.mean()) - float(photo[:200, :248].mean())) < 2


def test_colour_correction_removes_shift_and_keeps_texture(photo):
    import cv2

    clean = vq.downsample(photo, 2)
    noisy = clean + np.random.default_rng(0).normal(0, 8, clean.shape)
    shifted = np.clip(np.rint(noisy * [0.85, 1.0, 1.0] + [0, 0, 15]), 0, 255).astype(np.uint8)
    corrected = vq.colour_correct(shifted, clean, sigma=8.0)
    assert corrected.dtype == np.uint8 and corrected.shape == clean.shape
    before, after = lr_stats.image_stats(clean, shifted), lr_stats.image_stats(clean, corrected)
    assert after["delta_e"] < 0.65 * before["delta_e"]
    assert after["lowfreq_de"] < 0.2 * before["lowfreq_de"]

    def high(img):
        img = img.astype(np.float32)
        return img - cv2.GaussianBlur(img, (0, 0), 1.5)

    change = np.linalg.norm(high(corrected) - high(shifted)) / np.linalg.norm(high(shifted))
    to_clean = np.linalg.norm(high(clean) - high(shifted)) / np.linalg.norm(high(shifted))
    assert change < 0.15 and change < to_clean / 3  # the noise stays, not the clean detail
    assert after["noise_sigma"] == pytest.approx(before["noise_sigma"], rel=0.1)


def test_image_stats_see_noise_and_blur(photo):
    import cv2

    clean = vq.downsample(photo, 2)
    assert lr_stats.image_stats(clean, clean)["psnr"] is None
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 10, clean.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    blurred = cv2.GaussianBlur(clean, (0, 0), 1.5)
    n, b = lr_stats.image_stats(clean, noisy), lr_stats.image_stats(clean, blurred)
    assert n["sharpness_ratio"] > 1 > b["sharpness_ratio"]
    assert n["noise_sigma"] > 5 > b["noise_sigma"]
    assert 0 < n["ssim"] < 1 and n["delta_e"] > 0 and n["lowfreq_de"] < n["delta_e"]
    summary = lr_stats.summarise([{**n, "shifted": True}, {**b, "shifted": False}], threshold=5.0)
    assert summary["flagged"] == 1 and summary["diversity"]["psnr_std_db"] > 0


# ---------------------------------------------------------------- stages

@pytest.fixture
def vq_env(build_env):
    build_env.set("tiny.TrainVQVAE2", "max_epochs", 2)
    build_env.set("tiny.TrainVQVAE2", "crops_per_image", 2)
    build_env.set("tiny.TrainVQVAE2", "batch_size", 4)
    build_env.set("tiny.TrainVQVAE2", "crop", 32)
    build_env.set("tiny.TrainVQVAE2", "model", json.dumps(MICRO))
    build_env.set("tiny.VQVAEDegradeLR", "epochs", 1)
    return build_env


def _images(stage) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((stage.out_dir / "images").iterdir())}


def test_degrade_writes_lr_images_stats_and_reuses_the_training(vq_env):
    first = VQVAEDegradeLR(epochs=1, colour_correction=False)
    run_tasks(first)
    train = TrainVQVAE2()
    assert sorted(p.name for p in train.out_dir.glob("epoch-*.pt")) == ["epoch-01.pt",
                                                                       "epoch-02.pt"]
    assert load_checkpoint(train.out_dir / "epoch-02.pt")["config"] == MICRO
    assert len((train.out_dir / vq.EPOCHS_CSV).read_text().splitlines()) == 3
    assert (train.out_dir / "epochs.png").read_bytes().startswith(b"\x89PNG")
    hr_dir = IngestHR().out_dir
    images = read_images(hr_dir)
    for img in images:
        lr = read_rgb(image_path(first.out_dir, img.id))
        assert lr.dtype == np.uint8 and lr.shape == (img.height // 4, img.width // 4, 3)
    stats = json.loads((first.out_dir / "stats.json").read_text())
    assert set(stats["per_image"]) == {img.id for img in images}
    row = next(iter(stats["per_image"].values()))
    assert {"psnr", "ssim", "delta_e", "shifted", "noise_sigma", "sharpness_ratio"} <= set(row)
    assert stats["summary"]["images"] == len(images)
    assert (first.out_dir / "stats.png").read_bytes().startswith(b"\x89PNG")

    trained_at = (train.out_dir / "manifest.json").stat().st_mtime_ns
    second = VQVAEDegradeLR(epochs=2, colour_correction=True)
    run_tasks(second)
    assert second.requires()["model"].key == train.key
    assert (train.out_dir / "manifest.json").stat().st_mtime_ns == trained_at  # not retrained
    assert _images(second) != _images(first)
    for row in json.loads((second.out_dir / "stats.json").read_text())["per_image"].values():
        assert row["delta_e"] < row["uncorrected_de"]


def test_same_seed_same_output_and_resume_after_a_kill(vq_env, tmp_path, monkeypatch):
    first = VQVAEDegradeLR()
    run_tasks(first)
    reference = _images(first)
    weights = load_checkpoint(TrainVQVAE2().out_dir / "epoch-02.pt")["model"]

    vq_env.set("gtforge", "workdir", tmp_path / "again")
    run_tasks(IngestHR())
    real_step, calls = vq.train_step, []

    def killed_at_third(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kw)

    monkeypatch.setattr(vq, "train_step", killed_at_third)
    train = TrainVQVAE2()
    monkeypatch.setattr(train, "show_progress", lambda *a: None)  # no luigi worker here
    with pytest.raises(KeyboardInterrupt):
        train.run()  # 2 steps per epoch: epoch 1 and its checkpoint are done
    assert (train.partial_dir / "epoch-01.pt").is_file()
    calls.clear()

    def counted(*args, **kw):
        calls.append(1)
        return real_step(*args, **kw)

    monkeypatch.setattr(vq, "train_step", counted)
    resumed = VQVAEDegradeLR()
    run_tasks(resumed)
    assert len(calls) == 2  # only epoch 2 was trained again
    assert resumed.key == first.key and _images(resumed) == reference
    again = load_checkpoint(TrainVQVAE2().out_dir / "epoch-02.pt")["model"]
    assert all(torch.equal(weights[k], again[k]) for k in weights)

    vq_env.set("gtforge", "workdir", tmp_path / "other-seed")
    vq_env.set("gtforge", "seed", 1)
    other = VQVAEDegradeLR()
    run_tasks(other)
    assert _images(other) != reference


def test_extra_folder_adds_images_and_lists_rejects(vq_env, small_corpus, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "photo.png").write_bytes((small_corpus / "coffee.png").read_bytes())
    (extra / "notes.png").write_text("not a picture")
    base = TrainVQVAE2().key
    vq_env.set("tiny.TrainVQVAE2", "extra_dir", extra)
    train = TrainVQVAE2()
    assert train.key != base
    run_tasks(train)
    manifest = json.loads((train.out_dir / "manifest.json").read_text())
    assert manifest["info"]["images"] == len(read_images(IngestHR().out_dir)) + 1
    rejects = json.loads((train.out_dir / "rejects.json").read_text())
    assert [r["source"].rsplit("/", 1)[-1] for r in rejects] == ["notes.png"]


def test_epochs_above_max_epochs_fail_clearly(vq_env):
    with pytest.raises(ValueError, match="max_epochs=2"):
        VQVAEDegradeLR(epochs=3).requires()


def test_training_key_does_not_follow_consumer_epochs(vq_env):
    keys = {VQVAEDegradeLR(epochs=e).requires()["model"].key for e in (1, 2)}
    assert len(keys) == 1
    assert VQVAEDegradeLR(epochs=1).key != VQVAEDegradeLR(epochs=2).key


@pytest.mark.parametrize("stage,name,value", [
    (TrainVQVAE2, "max_epochs", 3), (TrainVQVAE2, "crops_per_image", 3),
    (TrainVQVAE2, "batch_size", 2), (TrainVQVAE2, "crop", 48), (TrainVQVAE2, "lr", 0.001),
    (TrainVQVAE2, "beta", 0.5), (TrainVQVAE2, "model", json.dumps({**MICRO, "decay": 0.9})),
    (VQVAEDegradeLR, "epochs", 2), (VQVAEDegradeLR, "colour_correction", "false"),
    (VQVAEDegradeLR, "correction_sigma", 4.0), (VQVAEDegradeLR, "shift_threshold", 2.0),
    (VQVAEDegradeLR, "reconstruct_at", "lr"),
])
def test_each_setting_changes_the_key(vq_env, stage, name, value):
    assert_setting_moves_key(vq_env, stage, f"tiny.{stage.__name__}", name, value)


def test_scale_changes_the_key_and_ckpt_every_does_not(vq_env):
    base, train = VQVAEDegradeLR().key, TrainVQVAE2().key
    vq_env.set("tiny.TrainVQVAE2", "ckpt_every", 7)
    assert TrainVQVAE2().key == train
    vq_env.set("gtforge", "scale", 2)
    assert VQVAEDegradeLR().key != base
