"""Faults: builds killed with SIGKILL at several points resume and finish with verified outputs;
a corpus of bad inputs is processed file by file, every reject listed with its reason."""

import json
import os
import re
import signal
import struct
import time
import zlib
from pathlib import Path

import h5py
import luigi
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.image import ingest
from pipeline.shards.spec import ShardError
from pipeline.shards.verify import verify
from pipeline.shards.writer import ShardWriter
from pipeline.store import cache
from pipeline.store.imageio import image_path, read_rgb
from pipeline.store.seeding import rng
from pipeline.train.loop import TrainState, latest_checkpoint, load_checkpoint, train_loop
from tasks import cli, stage_folders
from tasks.base import Stage
from tasks.config import gtforge
from tasks.corpus import listing, with_sources
from tasks.ingest import IngestHR
from tasks.publish import BuildDataset
from tasks.train_vqvae import TrainVQVAE2
from tests.conftest import run_tasks
from tests.test_scheduler import read_runs, record, start_worker, write_worker_config

STEPS, CKPT_EVERY, SHARDS, PER_SHARD, PATCH = 16, 4, 4, 5, 32


class FaultTrain(Stage):
    """A small resumable training through pipeline.train.loop.train_loop (as real trainings do):
    a linear model fitted to batches drawn from rng(seed, step), Adam, checkpoints."""

    resumable = True
    resources = {"gpu": 1}

    def requires(self):
        return {"hr": IngestHR()}

    def build(self, out):
        ckpt = out / "ckpt"
        found = latest_checkpoint(ckpt) if ckpt.exists() else None
        record(f"start@{int(found.stem.split('-')[1]) if found else 0}", self)
        torch.manual_seed(self.seed_for("init"))  # the initial weights are part of the result
        model = torch.nn.Linear(8, 1)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        seed = self.seed_for("train")

        def step(i):
            batch = torch.from_numpy(rng(seed, i).normal(size=(16, 8)).astype(np.float32))
            loss = (model(batch) - batch.sum(1, keepdim=True)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            time.sleep(0.08)
            return {"mse": loss.item()}

        state = TrainState(lambda: {"model": model.state_dict(), "opt": opt.state_dict()},
                           lambda s: (model.load_state_dict(s["model"]),
                                      opt.load_state_dict(s["opt"])))
        train_loop(step, state, STEPS, ckpt, CKPT_EVERY, seed, "FaultTrain",
                   on_progress=self.show_progress)
        torch.save(model.state_dict(), out / "model.pt")


class FaultShards(Stage):
    """Writes a shard set with pipeline.shards.writer.ShardWriter (as WriteShards does), slowly
    enough to be killed half-way; the scores carry the trained weights."""

    def requires(self):
        return {"hr": IngestHR(), "model": FaultTrain()}

    def build(self, out):
        record("start", self)
        weight = torch.load(self.input_dir("model") / "model.pt", weights_only=True)["weight"]
        images = ingest.read_images(self.input_dir("hr"))
        n = SHARDS * PER_SHARD
        with ShardWriter(out / "dataset", samples_per_shard=PER_SHARD, patch_size=PATCH, scale=4,
                         candidate_names=["same"], metric_names=["w"], compression=None,
                         params={"key": self.key},
                         sources=[listing().source(i.id) for i in images]) as w:
            for s in self.progress(range(n), n, "FaultShards"):
                img = read_rgb(image_path(self.input_dir("hr"), images[s % len(images)].id))
                crop = np.ascontiguousarray(img[s % 8:s % 8 + PATCH, :PATCH])
                lr = np.ascontiguousarray(crop[::4, ::4])
                w.add(gt_original=crop, gt_candidates=crop[None], labels=np.zeros(1, np.int8),
                      scores=weight[0, :2].numpy().reshape(2, 1), lq=lr, lq_vqvae=lr,
                      image_id=images[s % len(images)].id, x=0, y=s % 8,
                      source_index=s % len(images))
                time.sleep(0.03)


@pytest.fixture
def many_photos(tmp_path, build_env):
    """24 distinct small photos: IngestHR takes long enough to be killed in the middle."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(24):
        pixels = rng("photo", i).integers(0, 256, (160, 200, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i:02d}.png", compress_level=1)
    build_env.set("gtforge", "input_dir", folder)
    return folder


def _kill_when(proc, ready, what: str, timeout: float = 60) -> None:
    """SIGKILL the build's process group as soon as `ready()` is true."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the build ended (status {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _partial(family: str, pattern: str):
    root = Path(gtforge().workdir) / family
    return lambda: any(root.glob(f".partial-*/{pattern}"))


def test_sigkill_at_several_points_then_rerun_completes(many_photos, tmp_path, build_env):
    config = write_worker_config(tmp_path / "worker.cfg")
    log = tmp_path / "build.log"

    def build():
        return start_worker(config, "tests.test_faults", "FaultShards", "--local-scheduler",
                            log=log)

    _kill_when(build(), _partial("IngestHR", "images/*.png"), "IngestHR wrote an image")
    assert not IngestHR().complete()

    _kill_when(build(), _partial("FaultTrain", "ckpt/step-*.pt"), "FaultTrain's first checkpoint")
    assert IngestHR().complete() and not FaultTrain().complete()
    # A kill during torch.save leaves the checkpoint's temporary file; so would one here.
    (leftover,) = FaultTrain().partial_dir.glob("ckpt")
    (leftover / ".step-00000099.pt.tmp").write_bytes(b"half a checkpoint")

    _kill_when(build(), _partial("FaultShards", "dataset/shard-00001.h5"),
               "FaultShards' second shard")
    assert FaultTrain().complete() and not FaultShards().complete()

    proc = build()
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]

    starts = [r["event"] for r in read_runs() if r["family"] == "FaultTrain"]
    assert starts[0] == "start@0" and starts[1] != "start@0"  # resumed from its checkpoint
    root = FaultShards()
    for folder in stage_folders.stage_folders(root):
        assert folder.state == "done" and not folder.partial_path.exists()
        assert cache.verify_output(folder.path) == [], folder  # exactly what was published
        files = [row["path"] for row in cache.read_manifest(folder.path)["files"]]
        assert not [f for f in files if f.endswith(".tmp")], f"temporaries published: {files}"
    verify(root.out_dir / "dataset")  # every shard against the shard manifest
    assert len(list((root.out_dir / "dataset").glob("shard-*.h5"))) == SHARDS

    # Same keys in a fresh workdir, never interrupted: the same training result and shards.
    interrupted = {"weights": torch.load(FaultTrain().out_dir / "model.pt", weights_only=True),
                   "images": (IngestHR().out_dir / ingest.IMAGES_JSON).read_text(),
                   "samples": _samples(root.out_dir / "dataset")}
    build_env.set("gtforge", "workdir", tmp_path / "clean")
    run_tasks(FaultShards())
    clean = torch.load(FaultTrain().out_dir / "model.pt", weights_only=True)
    assert all(torch.equal(clean[k], interrupted["weights"][k]) for k in clean)
    assert (IngestHR().out_dir / ingest.IMAGES_JSON).read_text() == interrupted["images"]
    again = _samples(FaultShards().out_dir / "dataset")
    assert all(np.array_equal(again[k], interrupted["samples"][k]) for k in again)
    ckpt = load_checkpoint(latest_checkpoint(FaultTrain().out_dir / "ckpt"))
    assert ckpt["step"] == STEPS


def _samples(dataset: Path) -> dict[str, np.ndarray]:
    """Every array of a shard set, shards concatenated (to compare two builds' content)."""
    out: dict[str, list] = {}
    for path in sorted(dataset.glob("shard-*.h5")):
        with h5py.File(path, "r") as f:
            for name in ("gt_original", "gt_candidates", "lq", "scores", "labels", "meta"):
                out.setdefault(name, []).append(f[name][:])
    return {k: np.concatenate(v) for k, v in out.items()}


def test_a_corrupted_shard_is_named_by_verify_and_the_reader(tmp_path, capsys):
    out = tmp_path / "set"
    crop = rng("shard", 0).integers(0, 256, (PATCH, PATCH, 3), dtype=np.uint8)
    with ShardWriter(out, samples_per_shard=2, patch_size=PATCH, scale=4, candidate_names=["a"],
                     metric_names=["m"], compression=None, params={}, sources=["x.png"]) as w:
        for i in range(6):
            w.add(gt_original=crop, gt_candidates=crop[None], labels=np.ones(1, np.int8),
                  scores=np.zeros((2, 1), np.float32), lq=crop[::4, ::4], lq_vqvae=crop[::4, ::4],
                  image_id=f"id{i}", x=0, y=0, source_index=0)
    assert cli.main(["verify", str(out)]) == 0
    shard = out / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the image data
    shard.write_bytes(bytes(data))
    assert cli.main(["verify", str(out)]) == 1
    assert "shard-00001.h5" in capsys.readouterr().err
    shard.write_bytes(bytes(data[:2000]))  # truncated: HDF5 cannot open it any more
    assert cli.main(["verify", str(out)]) == 1
    assert "shard-00001.h5" in capsys.readouterr().err
    from pipeline.shards.dataset import ShardDataset

    reader = ShardDataset(out)  # what a trainer uses
    assert reader[0]["gt"].shape[-1] == PATCH  # the good shards still read
    with pytest.raises(ShardError, match="shard-00001.h5"):
        reader[2]


# ---------------------------------------------------------------- bad inputs

def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny valid IDAT chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 7)) + chunk(b"IEND", b"")


def _photo(h=150, w=180, seed=0):
    return rng("bad-corpus", seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_bad_corpus(folder: Path) -> tuple[dict, dict]:
    """Write the corpus; return ({good file name: check(rgb)}, {bad file name: reason regex})."""
    folder.mkdir()
    good, bad = {}, {}
    photo = _photo()

    Image.fromarray(photo).save(folder / "plain.jpg", quality=95)
    good["plain.jpg"] = lambda rgb: rgb.shape == (150, 180, 3)

    Image.fromarray(photo[..., 0]).save(folder / "grey.png")
    good["grey.png"] = lambda rgb: (rgb == photo[..., :1]).all()

    Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(
        folder / "palette.png")
    good["palette.png"] = lambda rgb: rgb.shape == (150, 180, 3) and len(
        np.unique(rgb.reshape(-1, 3), axis=0)) <= 16

    rgba = np.dstack([photo, np.where(np.arange(180) < 90, 0, 255).astype(np.uint8)[None]
                      .repeat(150, 0)])
    Image.fromarray(rgba).save(folder / "rgba.png")
    good["rgba.png"] = lambda rgb: (rgb[:, :90] == 255).all() and \
        (rgb[:, 90:] == photo[:, 90:]).all()  # transparent half composited on white

    img = Image.fromarray(photo)
    exif = img.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    img.save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    good["exif_rotated.jpg"] = lambda rgb: rgb.shape == (180, 150, 3)

    red = Image.new("CMYK", (160, 140), (0, 255, 255, 0))
    red.save(folder / "cmyk.jpg", quality=95)
    good["cmyk.jpg"] = lambda rgb: (np.abs(rgb.astype(int) - [255, 0, 0]) < 8).all()

    ramp = (np.arange(200 * 150) % 200 * 300).astype(np.uint16).reshape(150, 200)
    Image.fromarray(ramp).save(folder / "grey16.png")  # mode I;16
    good["grey16.png"] = lambda rgb: rgb[0, 199, 0] == round(199 * 300 / 65535 * 255)
    Image.fromarray((ramp // 300).astype(np.uint16)).save(folder / "grey16_dark.png")
    good["grey16_dark.png"] = lambda rgb: rgb.max() <= 1  # 199 of 65535 is nearly black

    name = os.fsdecode(b"caf\xe9 \xff.png")  # not UTF-8
    Image.fromarray(_photo(seed=1)).save(folder / name)
    good[name] = lambda rgb: rgb.shape == (150, 180, 3)

    (folder / "empty.png").write_bytes(b"")
    bad["empty.png"] = "empty"
    (folder / "notes.png").write_text("a text file named .png\n")
    bad["notes.png"] = "not an image"
    full = folder / "plain.jpg"
    Image.fromarray(_photo(seed=2)).save(folder / "t.png")
    (folder / "truncated.png").write_bytes((folder / "t.png").read_bytes()[:3000])
    (folder / "t.png").unlink()
    bad["truncated.png"] = "truncated"
    (folder / "truncated.jpg").write_bytes(full.read_bytes()[:2000])
    bad["truncated.jpg"] = "truncated"
    Image.fromarray(photo[:1, :1]).save(folder / "one_pixel.png")
    bad["one_pixel.png"] = "smaller than min_side"
    (folder / "huge_header.png").write_bytes(_png_claiming(100000, 100000))
    bad["huge_header.png"] = "max_pixels|decompression bomb"
    return good, bad


def test_bad_inputs_are_listed_and_good_ones_processed(build_env, tmp_path):
    folder = tmp_path / "corpus"
    good, bad = make_bad_corpus(folder)
    build_env.set("gtforge", "input_dir", folder)
    task = IngestHR()
    run_tasks(task)
    images = {os.fsencode(listing().source(img.id)): img
              for img in ingest.read_images(task.out_dir)}
    assert set(images) == {os.fsencode(n) for n in good}
    for name, check in good.items():
        rgb = read_rgb(image_path(task.out_dir, images[os.fsencode(name)].id))
        assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
        assert check(rgb), name
    rejects = {r["source"]: r["reason"] for r in listing().rejects + with_sources(task.rejects())}
    assert set(rejects) == set(bad)
    for name, reason in bad.items():
        assert re.search(reason, rejects[name]), (name, rejects[name])
    manifest = json.loads((task.out_dir / cache.MANIFEST).read_text())
    assert manifest["info"]["accepted"] == len(good)
    assert manifest["info"]["accepted"] + len(rejects) == len(good) + len(bad)
    assert cache.verify_output(task.out_dir) == []


def test_an_all_bad_corpus_fails_naming_every_file(build_env, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "huge.png").write_bytes(_png_claiming(100000, 100000))
    build_env.set("gtforge", "input_dir", folder)
    result = luigi.build([BuildDataset()], local_scheduler=True, detailed_summary=True)
    assert result.status.name == "FAILED" and IngestHR().complete()  # unusable, listed
    task = TrainVQVAE2()  # run the first training by hand to read the message the log shows
    task.set_progress_percentage = task.set_status_message = lambda _: None  # as luigi does
    with pytest.raises(RuntimeError) as failed:
        task.run()
    assert "empty.png: empty file" in str(failed.value)
    assert re.search(r"huge.png: .*(max_pixels|decompression bomb)", str(failed.value))


def test_every_training_stage_seeds_its_steps_from_its_key(build_env, sample_corpus, tmp_path,
                                                           monkeypatch):
    """One seeding for the trainings: torch's per-step seed derives from the stage key (so a
    new [gtforge] seed or any upstream change gives new draws), never the bare seed."""
    from pipeline.train import loop
    from tasks.mask_generator import TrainMaskGenerator
    from tasks.train_judge import TrainJudge
    from tasks.train_vqvae import TrainVQVAE2
    from tests.test_sr import _small_corpus
    from tests.test_vqvae import MICRO

    build_env.set("gtforge", "input_dir", _small_corpus(tmp_path, sample_corpus))
    for stage, key, value in (("TrainSR", "iterations", 2), ("TrainSR", "crop", 16),
                              ("TrainMaskGenerator", "iterations", 2),
                              ("TrainMaskGenerator", "batch_size", 2),
                              ("TrainVQVAE2", "max_epochs", 1), ("TrainVQVAE2", "crop", 32),
                              ("TrainVQVAE2", "crops_per_image", 2),
                              ("TrainVQVAE2", "model", json.dumps(MICRO))):
        build_env.set(f"tiny.{stage}", key, value)
    seeds, real = {}, loop.train_loop

    def recording(step, state, total, ckpt_dir, every, seed, desc="train", **kw):
        seeds[desc] = seed
        return real(step, state, total, ckpt_dir, every, seed, desc=desc, **kw)

    monkeypatch.setattr(loop, "train_loop", recording)
    mask_generator, vqvae, judge = TrainMaskGenerator(), TrainVQVAE2(), TrainJudge()
    run_tasks(mask_generator, vqvae, judge)  # TrainMaskGenerator needs TrainSR
    stages = {"TrainSR": mask_generator.input_stages()["sr"], "TrainJudge": judge,
              "TrainMaskGenerator": mask_generator, "TrainVQVAE2": vqvae}
    assert seeds == {name: stage.seed_for("steps") for name, stage in stages.items()}
    assert gtforge().seed not in seeds.values()
