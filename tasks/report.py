"""Report: one self-contained HTML page about a build, gathered from the upstream stage folders.

Nothing here names an upstream stage except the shard writer it requires: the Report walks the
DAG (requires()) and takes what each completed stage folder holds, by file name:

    shard-*.h5            sample patches: LR, VQ-VAE LR, original and candidates with labels
    scores.npz            score histograms per metric and the label counts per candidate
    curve.csv             training curves (pipeline.train.loop writes one per training); a
                          curve.png beside it is shown as it is, else the curve is drawn
    *.png, figures/*.png  pictures a stage draws (FuseGT's band weights, masks, ...); the
                          images/ folders (the stages' per-image outputs) are not shown
    *.json / *.csv        per-image colour shift: fields named delta_e / ciede2000 -> histogram
    rejects.json          rejected inputs with their reasons
    manifest.json         per-stage timings; with the build history, which stages were reused

A stage that is not in the configuration simply contributes nothing.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import h5py
import luigi
import numpy as np

from pipeline.image.ingest import display_path
from pipeline.report import html as page
from pipeline.store import cache
from pipeline.train.loop import plot_curve
from tasks import graph
from tasks.base import Stage
from tasks.config import gtforge

REPORT_DIR = "report"
HISTORY = "builds.jsonl"  # in the Report stage root: one line per report built
_DELTA_E = re.compile(r"(?i)(delta_?e|ciede|de2000|colou?r_shift)")
_SUMMARY = re.compile(r"(?i)(mean|avg|average|median|std|min|max|total)")
_STATISTIC = re.compile(r"(?i)^(n|count|iqr|[pq]\d+|mean|avg|average|median|std|min|max|total)$")
_PNG = b"\x89PNG\r\n\x1a\n"
_SMALL = 4 << 20  # JSON/CSV files larger than this are not searched for colour shifts


class Report(Stage):
    version = 1
    global_settings = ("scale", "preset")
    samples = luigi.OptionalIntParameter(default=None)
    tile = luigi.OptionalIntParameter(default=None)

    def requires(self):
        from tasks.evaluate import EvaluateTargets, MeasureTruth
        from tasks.write_shards import WriteShards

        config, deps = gtforge(), {"shards": WriteShards()}
        if config.references:
            deps["truth"] = MeasureTruth()
            if config.evaluate:
                deps["evaluation"] = EvaluateTargets()
        return deps

    @property
    def history_file(self) -> Path:
        return self.stage_root / HISTORY

    def upstream(self) -> list[Done]:
        """Every completed stage this report depends on, inputs first, with its files."""
        return [Done(t, t.out_dir, _listing(t.out_dir)) for t in graph.walk(self)
                if isinstance(t, Stage) and t is not self and cache.is_complete(t.out_dir)]

    def build(self, out: Path) -> dict:
        s = self.settings
        upstream = self.upstream()
        data = page.ReportData(
            title=f"gtforge build {self.key}",
            created=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            summary=summary(upstream, s),
            samples=sample_rows(_files(upstream, "shard-*.h5"), s["samples"], s["tile"]),
            rejects=rejects(upstream),
            stages=stage_rows(upstream, previous_report_time(self.history_file)),
            notes=["A stage counts as reused (a cache hit) when its output was published before "
                   "the previous report of this workdir was built."],
        )
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            data.figures["Training curves"] = curve_figures(upstream, Path(tmp))
        data.figures["Scores and labels"] = score_figures(upstream)
        data.figures["Colour shift (CIEDE2000 ΔE)"] = delta_e_figures(upstream)
        for stage, figs in stage_figures(upstream).items():
            data.figures[f"Figures: {stage}"] = figs
        data.figures = {k: v for k, v in data.figures.items() if v}
        data.tables = quality_tables(self.input_stages())
        (out / REPORT_DIR).mkdir()
        (out / REPORT_DIR / "index.html").write_text(page.render_html(data), encoding="utf-8")
        facts = {"samples": len(data.samples), "rejects": len(data.rejects),
                 "figures": sum(len(v) for v in data.figures.values()),
                 "stage_count": len(data.stages),
                 "reused": sum(bool(r.reused) for r in data.stages)}
        (out / REPORT_DIR / "report.json").write_text(json.dumps(
            {**facts, "stages": [{**r.__dict__} for r in data.stages], "rejects": data.rejects},
            indent=1, default=str, ensure_ascii=True))
        _append_history(self.history_file, self.key)
        return facts


# ---------------------------------------------------------------- quality against references

def quality_tables(inputs: dict) -> dict[str, list[page.Table]]:
    """The truth and evaluation tables when those stages are inputs (else nothing)."""
    from tasks.evaluate import EVALUATION_JSON, TRUTH_JSON, read_json

    tables = []
    if "truth" in inputs:
        tables += truth_tables(read_json(inputs["truth"], TRUTH_JSON))
    if "evaluation" in inputs:
        tables.append(evaluation_table(read_json(inputs["evaluation"], EVALUATION_JSON)))
    return {"Quality against the clean references": tables} if tables else {}


def _rate(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def truth_tables(result: dict) -> list[page.Table]:
    rows = []
    for name, c in result["candidates"].items():
        g = c["gain"]
        rows.append([name, c["patches"], f"{g['psnr']['mean']:+.2f}",
                     f"{g['psnr']['closer']}/{c['patches']}", f"{g['ssim']['mean']:+.4f}",
                     f"{g['edges']['mean']:+.2f}", f"{c['mad']:.2f}",
                     _rate(c["positive_precision"]), _rate(c["positive_recall"]),
                     _rate(c["negative_recall"])])
    o = result["overall"]
    rows.append(["all", "", "", "", "", "", "", _rate(o["positive_precision"]),
                 _rate(o["positive_recall"]), _rate(o["negative_recall"])])
    matrix = [[truth_name, *o["confusion"][i]] for i, truth_name in
              enumerate(("oracle Negative", "oracle Similar", "oracle Positive"))]
    return [page.Table("Candidates: closer to the clean photo than the original GT?",
                       ["candidate", "patches", "ΔPSNR dB", "closer", "ΔSSIM", "Δedge PSNR dB",
                        "mean abs diff to GT", "P precision", "P recall", "N recall"], rows,
                       f"oracle: Positive when ≥ {result['tau_db']} dB PSNR closer, Negative when "
                       f"≥ {result['tau_db']} dB further"),
            page.Table("Labels against the oracle, every candidate",
                       ["", "labelled Negative", "labelled Similar", "labelled Positive"], matrix)]


def evaluation_table(result: dict) -> page.Table:
    rows = []
    for name, row in result["comparison"].items():
        p, s = row["psnr"], row["ssim"]
        gain = p.get("gain_over_original")
        rows.append([name, f"{p['mean']:.3f} ± {p['std']:.3f}",
                     f"{s['mean']:.4f} ± {s['std']:.4f}",
                     "–" if gain is None else f"{gain['mean']:+.3f} ({gain['min']:+.3f} … "
                     f"{gain['max']:+.3f})", p.get("share_of_ceiling", "–")])
    return page.Table("Does the data help? A small SR network trained per target",
                      ["target", "held-out PSNR dB", "held-out SSIM",
                       "ΔPSNR over original (seeds)", "share of the clean ceiling"], rows,
                      f"{result['training_samples']} training samples; held-out photos: "
                      f"{', '.join(result['heldout'])}; mean ± std over seeds")


# ---------------------------------------------------------------- gathering

@dataclass
class Done:
    """A completed upstream stage, its folder and the files the report may use."""

    stage: Stage
    folder: Path
    files: list[Path]


def _listing(folder: Path) -> list[Path]:
    """Every file below `folder`, sorted, except the per-image outputs in images/ folders."""
    found = []
    for dirpath, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "images")
        found += [Path(dirpath) / n for n in names]
    return sorted(found)


def _files(upstream: list[Done], pattern: str) -> list[tuple[Stage, Path]]:
    """(stage, file) for every file whose name matches `pattern` in the upstream folders."""
    return [(d.stage, p) for d in upstream for p in d.files if fnmatch(p.name, pattern)]


def summary(upstream: list[Done], settings: dict) -> dict:
    config = gtforge()
    facts: dict[str, object] = {"preset": settings["preset"], "scale": settings["scale"],
                                "seed": settings["seed"], "candidates": config.candidates or "–",
                                "input folder": config.input_dir}
    for d in upstream:
        info = cache.read_manifest(d.folder).get("info") or {}
        if "accepted" in info:
            facts["images accepted / rejected"] = f"{info['accepted']} / {info.get('rejected', 0)}"
    shards = _files(upstream, "shard-*.h5")
    if shards:
        counts = []
        for _, path in shards:
            with h5py.File(path, "r") as f:
                counts.append(len(f["gt_original"]))
        facts["shards / samples"] = f"{len(shards)} / {sum(counts)}"
    facts["stages"] = len(upstream) + 1
    return facts


def sample_rows(shards: list[tuple[Stage, Path]], count: int, side: int) -> list[page.SampleRow]:
    """`count` samples spread evenly over the shards (format v1), as rows of tiles: LR inputs
    (enlarged), the original, and every candidate with its label and scores."""
    if not shards or count <= 0:
        return []
    sizes = []
    for _, path in shards:
        with h5py.File(path, "r") as f:
            sizes.append(len(f["gt_original"]))
    starts = np.cumsum([0] + sizes)
    picks = sorted({int(i) for i in np.linspace(0, starts[-1] - 1, count)}) if starts[-1] else []
    rows = []
    for n in picks:
        s = int(np.searchsorted(starts, n, side="right") - 1)
        path, i = shards[s][1], n - int(starts[s])
        with h5py.File(path, "r") as f:
            rows.append(_sample_row(f, i, side, f"{path.name} #{i}"))
    return rows


def _attr_names(dataset, attr: str) -> list[str]:
    values = dataset.attrs.get(attr, [])
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


def _sample_row(f, i: int, side: int, where: str) -> page.SampleRow:
    original = f["gt_original"][i]
    scale = int(f.attrs.get("scale", 1))
    tiles = []
    for name, title in (("lq", "LR"), ("lq_vqvae", "LR VQ-VAE")):
        if name in f:
            lr = f[name][i]
            tiles.append(page.Tile(f"{title} ×{original.shape[0] // lr.shape[0]}",
                                   page.display_tile(lr, side, original.shape[0] // lr.shape[0])))
    metrics = _attr_names(f["scores"], "metric_names") if "scores" in f else []
    scores = f["scores"][i] if "scores" in f else None

    def note(k: int) -> str:
        if scores is None:
            return ""
        return " ".join(f"{m} {scores[k, j]:.3g}" for j, m in enumerate(metrics))

    tiles.append(page.Tile("original", page.display_tile(original, side), note=note(0)))
    if "gt_candidates" in f:
        names = _attr_names(f["gt_candidates"], "candidate_names")
        labels = f["labels"][i] if "labels" in f else [None] * len(names)
        for k, name in enumerate(names):
            label = None if labels[k] is None else int(labels[k])
            tiles.append(page.Tile(name, page.display_tile(f["gt_candidates"][i, k], side),
                                   label=label, note=note(k + 1)))
    title = where
    if "meta" in f:
        meta = {k: f["meta"][i][k] for k in f["meta"].dtype.names}
        fields = {k: v.decode() if isinstance(v, bytes) else v for k, v in meta.items()}
        if "sources" in f and "source_index" in fields:  # the photo's file name
            source = f["sources"][int(fields.pop("source_index"))]
            fields["source"] = os.path.basename(source.decode("utf-8", "backslashreplace")
                                                if isinstance(source, bytes) else str(source))
        title = ", ".join(f"{k} {v}" for k, v in fields.items()) + f" ({where}, scale {scale})"
    return page.SampleRow(title, tiles)


def score_figures(upstream: list[Done]) -> list[page.Figure]:
    """Per metric, histograms of the original's and each candidate's scores over the kept
    patches; and the Positive / Similar / Negative counts per candidate."""
    figs = []
    for stage, path in _files(upstream, "scores.npz"):
        with np.load(path) as z:
            if not {"scores", "labels", "candidate_names", "metric_names"} <= set(z.files):
                continue
            keep = z["keep"].astype(bool) if "keep" in z.files else np.ones(len(z["scores"]), bool)
            scores, labels = z["scores"][keep], z["labels"][keep]
            names = ["original"] + [str(n) for n in z["candidate_names"]]
            metrics = [str(m) for m in z["metric_names"]]
        panels = {m: {n: scores[:, k, j] for k, n in enumerate(names)}
                  for j, m in enumerate(metrics)}
        figs.append(page.Figure(f"{graph.label(stage)}: scores per metric", page.histograms_png(
            panels, "score"), f"{int(keep.sum())} kept patches of {len(keep)}"))
        if len(names) > 1:
            figs.append(page.Figure(f"{graph.label(stage)}: labels",
                                    page.labels_png(labels, names[1:]),
                                    "majority vote of the metrics"))
    return figs


def curve_figures(upstream: list[Done], tmp: Path) -> list[page.Figure]:
    """Every training curve (curve.csv): the stage's own curve.png beside it, or drawn with
    pipeline.train.loop.plot_curve."""
    figs = []
    for n, (stage, path) in enumerate(_files(upstream, "curve.csv")):
        png = path.with_suffix(".png")
        if not (png.is_file() and png.read_bytes().startswith(_PNG)):
            png = tmp / f"curve{n}.png"
            plot_curve(path, png, graph.label(stage))
        steps = sum(1 for _ in open(path)) - 1
        figs.append(page.Figure(graph.label(stage), png.read_bytes(), f"{steps} steps"))
    return figs


def _is_delta_e(key: str) -> bool:
    """A per-image colour-shift field (delta_e, ciede2000, ...), not a summary (mean_delta_e)."""
    return bool(_DELTA_E.search(key)) and not _SUMMARY.search(key)


def _numbers(value) -> list[float]:
    """A number, or the numbers of a list or of a dict's values ({image id: value})."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):  # {image id: value}, not {"mean": ..., "p90": ...}
        items = [v for k, v in value.items() if not _STATISTIC.match(str(k))]
    else:
        items = value if isinstance(value, list) else []
    return [float(v) for v in items if isinstance(v, int | float) and not isinstance(v, bool)]


def _json_delta_e(doc) -> list[float]:
    """Every value under a colour-shift key anywhere in a JSON document."""
    values: list[float] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            values += _numbers(v) if _is_delta_e(str(k)) else _json_delta_e(v)
    elif isinstance(doc, list):
        for v in doc:
            values += _json_delta_e(v)
    return values


def _delta_e_values(path: Path) -> list[float]:
    """Per-image colour-shift values (fields named like delta_e / ciede2000) in a JSON or CSV
    file, e.g. [{"id": ..., "delta_e": 2.1}, ...], {"delta_e": {id: 2.1}} or a CSV column."""
    if path.name in (cache.MANIFEST, "images.json", "rejects.json") or \
            path.stat().st_size > _SMALL:
        return []
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return [float(v) for row in csv.DictReader(f) for k, v in row.items()
                    if k and _is_delta_e(k) and v]
    try:
        return _json_delta_e(json.loads(path.read_text()))
    except (ValueError, UnicodeDecodeError):
        return []


def delta_e_figures(upstream: list[Done]) -> list[page.Figure]:
    """A ΔE histogram per stage that records colour shifts, from its file with the most values
    (a stage often writes the same per-image values as JSON and CSV)."""
    figs = []
    for d in upstream:
        found = [(len(v), -i, p, v) for i, p in enumerate(d.files)
                 if p.suffix in (".json", ".csv") and (v := _delta_e_values(p))]
        if found:
            _, _, path, values = max(found, key=lambda row: row[:2])
            arr = np.asarray(values)
            figs.append(page.Figure(f"{graph.label(d.stage)}: ΔE per image", page.histograms_png(
                {"CIEDE2000": {"ΔE": arr}}, "ΔE"), f"{len(arr)} values in {path.name}, "
                f"mean {arr.mean():.2f}, max {arr.max():.2f}"))
    return figs


def stage_figures(upstream: list[Done]) -> dict[str, list[page.Figure]]:
    """The pictures stages drew (PNG files at the top of their folder or in figures/), by
    stage; training curves are shown with the other curves."""
    out: dict[str, list[page.Figure]] = {}
    for d in upstream:
        seen: set[bytes] = set()  # the same picture saved twice is shown once
        for path in d.files:
            if path.suffix != ".png" or path.parent not in (d.folder, d.folder / "figures"):
                continue
            if path.with_suffix(".csv").name == "curve.csv" and path.with_suffix(".csv").is_file():
                continue
            data = path.read_bytes()
            if data.startswith(_PNG) and data not in seen:
                seen.add(data)
                out.setdefault(graph.label(d.stage), []).append(page.Figure(path.stem, data))
    return out


def rejects(upstream: list[Done]) -> list[dict[str, str]]:
    rows = []
    for stage, path in _files(upstream, "rejects.json"):
        for r in json.loads(path.read_text()):
            rows.append({"source": display_path(r.get("source", "")),
                         "reason": r.get("reason", ""), "stage": stage.get_task_family()})
    return rows


# ---------------------------------------------------------------- timings and cache hits

def previous_report_time(history: Path) -> float | None:
    """When the previous report of this workdir was built (epoch seconds), or None."""
    try:
        lines = history.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return float(json.loads(line)["time"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _append_history(history: Path, key: str) -> None:
    """One line per report: a single O_APPEND write, so concurrent reports do not interleave."""
    line = json.dumps({"time": time.time(), "key": key}) + "\n"
    fd = os.open(history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def stage_rows(upstream: list[Done], since: float | None) -> list[page.StageRow]:
    """Timings from each stage's manifest. A stage counts as reused (a cache hit) when it was
    published before the previous report of this workdir; with no previous report, every
    stage was built for this one."""
    rows = []
    for d in upstream:
        stage, folder = d.stage, d.folder
        manifest = cache.read_manifest(folder)
        published = (folder / cache.MANIFEST).stat().st_mtime
        rows.append(page.StageRow(
            family=graph.label(stage), key=stage.key, seconds=manifest.get("seconds"),
            published=manifest.get("published"),
            reused=False if since is None else published < since,
            bytes=cache.folder_bytes(folder), settings=manifest.get("params", {})))
    return rows
