"""The Report: gathered from a small DAG by walking it, rendered as one self-contained HTML page,
checked in a real headless browser (Debian's chromium) when one is installed."""

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import h5py
import luigi
import luigi.configuration
import numpy as np
import pytest
import torch

from pipeline.image.ingest import REJECTS_JSON, read_images
from pipeline.image.plots import display_tile
from pipeline.quality import lr_stats
from pipeline.quality import scores as score_table
from pipeline.report import html as page
from pipeline.report import tables
from pipeline.store import durable
from pipeline.store.imageio import encode_png, image_path, read_rgb
from pipeline.train.loop import TrainState, train_loop
from tasks.base import Stage
from tasks.corpus import listing, with_sources
from tasks.ingest import IngestHR
from tasks.report import Report
from tests.conftest import run_tasks

CANDIDATES = ["rcan_noise", "fused"]
METRICS = ["niqe", "piqe"]
SCALE, PATCH = 4, 64


class ReportTrain(Stage):
    """A stand-in training stage: writes ckpt/curve.csv through pipeline.train.loop.train_loop."""

    resumable = True

    def requires(self):
        return {"hr": IngestHR()}

    def build(self, out):
        w = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)

        def step(i):
            opt.zero_grad()
            loss = (w - 1).pow(2).sum()
            loss.backward()
            opt.step()
            return {"l1": loss.item(), "gan": loss.item() / 2}

        state = TrainState(lambda: {"w": w.detach().clone()}, lambda s: w.data.copy_(s["w"]))
        train_loop(step, state, 12, out / "ckpt", 6, self.seed_for("train"), "ReportTrain")


class ReportScores(Stage):
    """Stand-in for ScorePatches (scores.npz), the VQ-VAE colour shift (delta_e) and stages
    drawing their own figures (band_weights.png like FuseGT, figures/masks.png)."""

    def requires(self):
        return {"hr": IngestHR()}

    def build(self, out):
        rng = np.random.default_rng(0)
        n, k, m = 10, len(CANDIDATES), len(METRICS)
        score_table.save(out, score_table.ScoreTable(
            keep=np.arange(n) % 5 != 0, labels=rng.integers(-1, 2, (n, k)).astype(np.int8),
            vote_counts=np.zeros((n, k, 3), np.uint8),
            scores=rng.normal(5, 1, (n, k + 1, m)).astype(np.float32),
            votes=np.zeros((n, k, m), np.int8), candidate_names=CANDIDATES, metric_names=METRICS,
            lower_better=[True] * m, modes=["NR"] * m,
            margins=np.arange(1, k + 1)[:, None] * np.ones((k, m)),
            negative_margins=np.arange(1, k + 1)[:, None] * np.ones((k, m)) + [0.5, 0]))
        ids = [img.id for img in read_images(self.input_dir("hr"))]
        rows = [{"id": i, "delta_e": 1.5 + k, "shifted": False} for k, i in enumerate(ids)]
        lr_stats.save(out, rows, {"images": len(rows)})
        (out / "figures").mkdir()
        mask = np.linspace(0, 255, 48 * 64).reshape(48, 64).astype(np.uint8)
        (out / "figures" / "masks.png").write_bytes(encode_png(np.dstack([mask] * 3)))
        (out / "band_weights.png").write_bytes(encode_png(np.dstack([mask.T] * 3)))


def write_v1_shard(path: Path, crops: list[tuple[str, np.ndarray, int, int]]) -> None:
    """A shard in the DESIGN §3 format v1 from (image id, HR crop, x, y) rows."""
    n, k, m = len(crops), len(CANDIDATES), len(METRICS)
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f.attrs.update(format="gtforge-shards", format_version=1, scale=SCALE)
        gt = np.stack([c for _, c, _, _ in crops])
        f["gt_original"] = gt
        f["gt_candidates"] = np.stack([255 - gt, gt // 2], axis=1)
        f["gt_candidates"].attrs["candidate_names"] = CANDIDATES
        f["labels"] = np.array([[1, -1]] * n, np.int8)
        f["scores"] = rng.normal(5, 1, (n, k + 1, m)).astype(np.float32)
        f["scores"].attrs["metric_names"] = METRICS
        lq = np.stack([cv2.resize(c, (PATCH // SCALE,) * 2, interpolation=cv2.INTER_AREA)
                       for c in gt])
        f["lq"], f["lq_vqvae"] = lq, lq
        meta = np.zeros(n, [("image_id", "S16"), ("x", "i4"), ("y", "i4"), ("source_index", "i4")])
        for i, (image_id, _, x, y) in enumerate(crops):
            meta[i] = (image_id.encode(), x, y, i)
        f["meta"] = meta
        f["sources"] = np.array([f"/photos/p{i}.png".encode() for i in range(n)], "S64")


class ReportShards(Stage):
    """Stand-in for WriteShards: two shards of HR crops."""

    per_shard = luigi.IntParameter(default=3)

    def requires(self):
        return {"hr": IngestHR(), "train": ReportTrain(), "scores": ReportScores()}

    def build(self, out):
        crops = []
        for img in read_images(self.input_dir("hr")):
            rgb = read_rgb(image_path(self.input_dir("hr"), img.id))
            crops += [(img.id, rgb[y:y + PATCH, x:x + PATCH], x, y) for x, y in ((0, 0), (64, 64))]
        (out / "dataset").mkdir()
        rejects = listing().rejects + with_sources(self.input_stages()["hr"].rejects())
        durable.write_json(out / REJECTS_JSON, rejects)  # as WriteManifest does
        for s in range(0, len(crops), self.per_shard):
            write_v1_shard(out / "dataset" / f"shard-{s // self.per_shard:05d}.h5",
                           crops[s:s + self.per_shard])


class ReportUnderTest(Report):
    def requires(self):
        return {"shards": ReportShards()}


@pytest.fixture
def corpus(small_corpus, tmp_path, build_env):
    folder = tmp_path / "corpus"
    shutil.copytree(small_corpus, folder)
    (folder / "notes.png").write_text("<b>not</b> a picture")
    (folder / "caf\xe9.png".encode("latin-1").decode("utf-8", "surrogateescape")).write_bytes(
        b"\x89PNG\r\n\x1a\n")  # a non-UTF-8 name, truncated content
    build_env.set("gtforge", "input_dir", folder)
    for name in ("samples", "tile"):  # the test subclass takes the Report's defaults
        build_env.set("paper.ReportUnderTest", name,
                      luigi.configuration.get_config().get("paper.Report", name))
    return folder


@pytest.fixture
def built(corpus):
    task = ReportUnderTest()
    run_tasks(task)
    return task


def _html(task: Report) -> str:
    return (task.out_dir / "report" / "index.html").read_text(encoding="utf-8")


def _embedded_images(html: str) -> list[np.ndarray]:
    images = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html):
        buf = np.frombuffer(base64.b64decode(data), np.uint8)
        images.append(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED))
    return images


def test_report_gathers_every_kind_of_upstream_output(built):
    html = _html(built)
    assert "src=\"http" not in html and "<script" not in html  # self-contained, no script
    images = _embedded_images(html)
    assert all(img is not None and img.size for img in images)
    rows = re.findall(r"<h3>(image_id .*?)</h3>", html)
    assert len(rows) == len(set(rows)) == 8  # [paper.Report] samples = 8; 8 crops exist
    assert "shard-00000.h5" in html and "shard-00002.h5" in html and "source p1.png" in html
    # per sample: LR, LR VQ-VAE, original, each candidate with its label
    assert html.count(">rcan_noise <b") == len(rows) and html.count("Positive</b>") == len(rows)
    assert html.count(">LR ×4<") == html.count(">LR VQ-VAE ×4<") == len(rows)
    assert "Negative</b>" in html
    for title in ("Training curves", "Scores and labels", "Colour shift", "Figures: ReportScores",
                  "Rejected inputs (2)", "Stages: timings and cache hits", "Vote margins"):
        assert title in html
    margins = html[html.index("the margin each vote needed"):]
    assert all(f"<td>{name}</td><td>{k + 1} / {k + 1.5}</td><td>{k + 1}</td>" in margins
               for k, name in enumerate(CANDIDATES))  # niqe: a margin per sign
    assert "ReportTrain" in html and "12 steps" in html  # curve.csv found and drawn
    assert "4 values in stats.json, mean 3.00" in html  # delta_e of every image
    assert "notes.png" in html and "not an image" in html
    assert "caf\\xe9.png" in html  # a non-UTF-8 name shown by its bytes
    for family in ("IngestHR", "ReportTrain", "ReportScores", "ReportShards"):
        assert f"<td>{family}" in html
    tiles = [img for img in images if img.shape[:2] == (PATCH, PATCH)]
    assert len(tiles) == html.count("<div class='tile'>") == len(rows) * (2 + 1 + len(CANDIDATES))
    assert sum(img.shape[:2] == (48, 64) for img in images) == 1  # figures/masks.png
    assert sum(img.shape[:2] == (64, 48) for img in images) == 1  # band_weights.png


def test_cache_hits_are_reported_after_a_change(built, build_env):
    facts = json.loads((built.out_dir / "report" / "report.json").read_text())
    assert facts["reused"] == 0 and len(facts["stages"]) == 4  # first report: all built
    build_env.set("ReportShards", "per_shard", 4)
    task = ReportUnderTest()
    assert task.key != built.key
    run_tasks(task)
    rows = {r["family"].split("(")[0]: r for r in
            json.loads((task.out_dir / "report" / "report.json").read_text())["stages"]}
    assert {f for f, r in rows.items() if r["reused"]} == {"IngestHR", "ReportTrain",
                                                           "ReportScores"}
    assert rows["ReportShards"]["reused"] is False
    assert "reused (cache hit)" in _html(task) and "3 reused from the cache" in _html(task)


def test_render_is_robust_to_missing_sections_and_escapes_text():
    data = page.ReportData(title="t <x>", created="now",
                           rejects=[{"source": "a<script>.png", "reason": "bad & \udcff"}])
    html = page.render_html(data)
    assert "a&lt;script&gt;.png" in html and "bad &amp; \\xff" in html
    assert "No samples" in html and "<script" not in html
    html.encode("utf-8")  # no lone surrogates left


def test_colour_shift_values_are_read_from_the_lr_statistics(tmp_path):
    assert lr_stats.load(tmp_path) is None  # a stage without LR statistics
    rows = [{"id": "x", "delta_e": 1.0, "psnr": 30.0, "shifted": False},
            {"id": "y", "delta_e": 2.5, "psnr": 31.0, "shifted": True}]
    lr_stats.save(tmp_path, rows, {"images": 2})
    np.testing.assert_array_equal(lr_stats.delta_e_values(lr_stats.load(tmp_path)), [1.0, 2.5])


def test_display_tile_enlarges_lr_and_crops_the_centre():
    lr = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    big = display_tile(lr, side=8, scale=4)
    assert big.shape == (8, 8, 3) and (big[0, 0] == lr[1, 1]).all()  # centre of the 16x16


CHECK_HEAD = """<script>window.__errors=[];
window.addEventListener('error',e=>window.__errors.push(String(e.message||(e.target&&e.target.src))),true);
const _ce=console.error;
console.error=(...a)=>{window.__errors.push(a.join(' '));_ce(...a)};</script>"""
CHECK_TAIL = """<script>window.addEventListener('load',()=>{const imgs=[...document.images];
const r={n:imgs.length,broken:imgs.filter(i=>!i.complete||i.naturalWidth===0).length,
widths:imgs.map(i=>i.naturalWidth),errors:window.__errors,
height:document.body.scrollHeight};const p=document.createElement('pre');p.id='check';
p.textContent=JSON.stringify(r);document.body.appendChild(p);});</script>"""

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install "
                    "-y chromium); the report is then only checked without a browser")
def test_report_renders_in_headless_chromium(built, tmp_path):
    html = _html(built)
    checked = html.replace("<head>", "<head>" + CHECK_HEAD, 1).replace(
        "</body>", CHECK_TAIL + "</body>", 1)
    page_file = tmp_path / "check.html"
    page_file.write_text(checked, encoding="utf-8")
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", page_file.as_uri()],
        capture_output=True, text=True, timeout=90)
    found = re.search(r'<pre id="check">(.*?)</pre>', run.stdout)
    assert found, f"chromium printed no check result: {run.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&quot;", '"'))
    assert result["errors"] == []
    assert result["n"] == len(_embedded_images(html)) > 20 and result["broken"] == 0
    assert min(result["widths"]) > 0 and result["height"] > 1000


def test_stages_are_summed_per_stage_over_their_chunk_tasks():
    enhance = "EnhanceHR(backbone=rcan, degradation=blur)"  # the label its chunks share
    rows = [page.StageRow(enhance, "k1", 10.0, None, False, 2048),
            page.StageRow(enhance, "k2", 30.0, None, True, 2048),
            page.StageRow("EnhanceHR(backbone=elan, degradation=blur)", "k4", 5.0, None, False, 1),
            page.StageRow("WriteManifest", "k3", 1.0, None, False, 10)]
    html = page._stages_html(rows)
    summary = html[:html.index("<details>")]
    cells = lambda name: re.findall(r"<td[^>]*>([^<]*)</td>",  # noqa: E731
                                    summary[summary.index(f"<td>{name}</td>"):])[:7]
    assert cells(enhance) == [enhance, "2", "1", "1", page._seconds(40.0),
                              page._seconds(30.0), page.human_size(4096)]
    assert cells("WriteManifest")[1:4] == ["1", "1", "0"]
    assert html.count("<code>k") == 4  # every task is still listed, folded away


def test_photo_gains_table_lists_photos_then_their_mean_and_median():
    gains = {"a.png": {"clean": 0.3, "hggt": 0.1}, "b.png": {"clean": -1.5, "hggt": 0.2},
             "c.png": {"clean": 0.2, "hggt": -0.3}}
    table = tables.photo_gains_table(gains)
    assert table.header == ["held-out photo", "clean", "hggt"]
    assert [r[0] for r in table.rows] == ["a.png", "b.png", "c.png", "mean of the photos",
                                          "median"]
    assert table.rows[1] == ["b.png", "-1.500", "+0.200"]
    assert table.rows[3] == ["mean of the photos", "-0.333", "+0.000"]
    assert table.rows[4] == ["median", "+0.200", "+0.100"]
