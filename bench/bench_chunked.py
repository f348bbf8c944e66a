"""Chunked builds on many workers (issue "data-parallel stages"): a generated corpus of 1-2 MP
photos built with one worker, with two, as two worker processes on one luigid (as if on two
hosts), at half the corpus, and again with one photo added.

    .venv/bin/python -m bench.bench_chunked --dir /tmp/chunked [--photos 200] [--megapixels 1,2]
        [--training 16] [--chunk-photos 8] [--candidates rcan_blur] [--repeats 2]
        [--runs one,two,serial,hosts,half,add]

1. The corpus: `--photos` photos cut from the sample photographs with seeded crops, flips and
   rescales to between the two `--megapixels` (JPEG); the models train on the first
   `--training` of them ([gtforge] training_set), once, in a workdir of their own.
2. Every run copies that workdir (hard links: stage folders are never written again) and
   builds WriteManifest in a subprocess, so what is timed is the per-photo stages of every
   chunk and the set's manifest. It reports the wall time, each stage's summed seconds (from
   the manifests of the stages it built), and the peak RSS of the largest process
   (/usr/bin/time).
   - one: one worker, [gtforge] threads = 2 (torch uses both cores);
   - serial: one worker, threads = 1 (one core: the baseline of two single-threaded workers);
   - two: two workers on the local scheduler, threads = 1 each;
   one and two take turns `--repeats` times, each pair after a measure of the hardware
   ceiling (3.), because this machine's speed drifts (shared virtual CPUs);
   - hosts: two independent worker processes (one worker each, threads = 1) on one luigid
     and one workdir; the bench checks from their logs that no task ran twice, then that
     every stage folder they built matches its manifest and the set verifies;
   - half: one worker on the first half of the photos (cost growth: time and peak RSS);
   - add: the "one" workdir again with one more photo (the incremental cost).
3. The hardware ceiling of two workers: a single-threaded convolution loop (the enhancers'
   kind of work) alone, then two copies at once; 2 x alone / slower copy is the most two
   processes can gain here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from bench.bench_scheduler import start_luigid
from pipeline.image.sample import SAMPLE_FILES, copy_sample_corpus
from pipeline.shards.verify import verify
from pipeline.store import cache

LUIGI = Path(sys.executable).with_name("luigi")
DONE_LINE = re.compile(r"Worker\(.*?\) done\s+(\S.*)$")


def make_photos(dest: Path, count: int, megapixels: tuple[float, float], seed: int) -> None:
    """`count` JPEGs in `dest` (kept when already there): photo i is a seeded crop (half to all
    of each side) of a sample photograph, flipped or not, resized to a seeded size in
    `megapixels`."""
    samples = copy_sample_corpus(dest.parent / "samples")
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = dest / f"photo-{i:04d}.jpg"
        if path.exists():
            continue
        draw = np.random.default_rng([seed, i])
        rgb = np.asarray(Image.open(samples[i % len(SAMPLE_FILES)]).convert("RGB"))
        h, w = rgb.shape[:2]
        ch, cw = (int(s * draw.uniform(0.5, 1.0)) for s in (h, w))
        y, x = int(draw.integers(0, h - ch + 1)), int(draw.integers(0, w - cw + 1))
        crop = rgb[y:y + ch, x:x + cw]
        if draw.random() < 0.5:
            crop = crop[:, ::-1]
        scale = (draw.uniform(*megapixels) * 1e6 / (ch * cw)) ** 0.5
        size = (round(cw * scale), round(ch * scale))
        Image.fromarray(np.ascontiguousarray(crop)).resize(size, Image.BICUBIC) \
            .save(path, quality=92)


CONV_LOOP = """
import time, torch
torch.set_num_threads(1)
x, conv = torch.randn(1, 32, 512, 512), torch.nn.Conv2d(32, 32, 3, padding=1)
with torch.no_grad():
    conv(x)
    started = time.perf_counter()
    for _ in range(150):
        conv(x)
print(time.perf_counter() - started)
"""


def parallel_ceiling() -> tuple[float, float]:
    """(seconds of the convolution loop alone, of the slower of two copies run at once)."""
    def run(copies: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", CONV_LOOP], stdout=subprocess.PIPE,
                                  text=True) for _ in range(copies)]
        return max(float(p.communicate()[0]) for p in procs)

    return run(1), run(2)


def write_config(path: Path, values: dict[str, object]) -> Path:
    """A luigi.cfg of [gtforge] values for the builds (the repository's is read first)."""
    lines = ["[gtforge]", *(f"{k} = {v}" for k, v in values.items()),
             "[core]", "log_level = INFO"]
    path.write_text("\n".join(lines) + "\n")
    return path


def stage_folders(workdir: Path) -> set[Path]:
    return {p for p in workdir.glob("*/*") if (p / "manifest.json").is_file()}


def run_build(config: Path, target: str, workers: int, log: Path,
              scheduler: list[str] | None = None) -> subprocess.Popen:
    """`luigi --module tasks <target>` under /usr/bin/time (peak RSS to log.rss)."""
    args = ["/usr/bin/time", "-f", "%M", "-o", f"{log}.rss", str(LUIGI), "--module", "tasks",
            target, "--workers", str(workers), "--no-lock",  # several on one host: no pid lock
            *(scheduler or ["--local-scheduler"])]
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config)}
    with open(log, "w") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def finished(proc: subprocess.Popen, log: Path, ok: tuple[int, ...] = (0,)) -> float:
    """Wait for a build; its peak RSS in MB. SystemExit quoting the log when its exit code is
    not in `ok`."""
    if proc.wait() not in ok:
        raise SystemExit(f"build failed ({log}):\n{log.read_text()[-3000:]}")
    return int(Path(f"{log}.rss").read_text().split()[-1]) / 1024


def stage_seconds(folders: set[Path]) -> dict[str, tuple[int, float]]:
    """(how many, summed seconds) per stage family of these stage folders."""
    found: dict[str, list[float]] = defaultdict(list)
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        found[manifest["stage"]].append(manifest["seconds"])
    return {k: (len(v), sum(v)) for k, v in sorted(found.items())}


def check_outputs(folders: set[Path]) -> None:
    """Every stage folder exactly as its manifest lists it, and the shard set verified;
    SystemExit naming the first problem."""
    problems = [p for folder in sorted(folders) for p in cache.verify_output(folder)]
    sets = [folder / "dataset" for folder in folders if folder.parent.name == "WriteManifest"]
    if not sets:
        raise SystemExit("the workers left without writing the set's manifest")
    for dataset in sets:
        verify(dataset)
    if problems:
        raise SystemExit(f"outputs that do not match their manifests: {problems[:3]}")
    print(f"verified: {len(folders)} stage folders and the shard set", flush=True)


def copy_workdir(src: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["cp", "-al", str(src), str(dest)], check=True)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.root, self.args = args.dir.resolve(), args
        self.photos = self.root / "photos"
        make_photos(self.photos, args.photos, tuple(args.megapixels), args.seed)
        self.training = self.root / "training"
        self.training.mkdir(exist_ok=True)
        for path in sorted(self.photos.iterdir())[:args.training]:
            if not (self.training / path.name).exists():
                os.link(path, self.training / path.name)
        self.rows: list[tuple] = []

    def config(self, name: str, input_dir: Path, threads: int, workdir: Path) -> Path:
        return write_config(self.root / f"{name}.cfg", {
            "preset": "tiny", "input_dir": input_dir, "workdir": workdir,
            "out_dir": self.root / f"out-{name}", "device": "cpu", "threads": threads,
            "candidates": self.args.candidates, "chunk_photos": self.args.chunk_photos,
            "training_set": self.training})

    def train(self) -> Path:
        """The trainings, once, in work-train (two workers)."""
        config = self.config("train", self.training, 1, self.root / "work-train")
        started = time.perf_counter()
        finished(run_build(config, "TrainJudge", 2, self.root / "train.log"),
                 self.root / "train.log")
        targets = ["TrainVQVAE2"] + (["TrainMaskGenerator"] if "fused" in self.args.candidates
                                     else [])
        for target in targets:
            finished(run_build(config, target, 2, self.root / "train.log"),
                     self.root / "train.log")
        print(f"trainings: {time.perf_counter() - started:.0f} s (two workers, not compared)")
        return self.root / "work-train"

    def measure(self, name: str, input_dir: Path, workers: int, threads: int,
                hosts: int = 1, workdir: Path | None = None) -> None:
        work = workdir or self.root / f"work-{name}"
        config = self.config(name, input_dir, threads, work)
        if workdir is None:
            copy_workdir(self.root / "work-train", work)
        before = stage_folders(work)
        started = time.perf_counter()
        if hosts == 1:
            rss = finished(run_build(config, "WriteManifest", workers, self.root / f"{name}.log"),
                           self.root / f"{name}.log")
        else:
            rss = self.on_luigid(config, name, hosts)
        wall = time.perf_counter() - started
        made = stage_folders(work) - before
        if hosts > 1:
            check_outputs(made)
        built = stage_seconds(made)
        self.rows.append((name, workers, threads, hosts, wall, rss, built))
        print(f"{name}: {wall:.0f} s, peak RSS {rss:.0f} MB, "
              + ", ".join(f"{k} {n}x {s:.0f} s" for k, (n, s) in built.items()), flush=True)

    def on_luigid(self, config: Path, name: str, hosts: int) -> float:
        """`hosts` worker processes on one luigid; SystemExit when a task ran twice."""
        state = self.root / f"luigid-{name}"
        state.mkdir(exist_ok=True)
        luigid, port = start_luigid(state, {"cpu": 2})  # the two hosts' heavy stages at once
        try:
            logs = [self.root / f"{name}-{h}.log" for h in range(hosts)]
            # keep-alive: a worker waits for tasks the other runs instead of leaving; each exits
            # 0, or 10 / 25 when another worker ran tasks it needed (docs/SCALING.md)
            procs = [run_build(config, "WriteManifest", 1, log, [
                "--scheduler-host", "127.0.0.1", "--scheduler-port", str(port),
                "--worker-keep-alive"]) for log in logs]
            rss = max(finished(p, log, (0, 10, 25)) for p, log in zip(procs, logs, strict=True))
        finally:
            luigid.terminate()
            luigid.wait()
        runs = [DONE_LINE.search(line).group(1) for log in logs
                for line in log.read_text().splitlines() if DONE_LINE.search(line)]
        twice = [task for task, n in Counter(runs).items() if n > 1]
        per_host = [sum(bool(DONE_LINE.search(line)) for line in log.read_text().splitlines())
                    for log in logs]
        print(f"{name}: tasks run per worker process {per_host}, run twice: {len(twice)}")
        if twice:
            raise SystemExit(f"ran twice: {twice[:3]}")
        return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("data/chunked"))
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--megapixels", type=lambda s: [float(v) for v in s.split(",")],
                        default=[1.0, 2.0])
    parser.add_argument("--training", type=int, default=16)
    parser.add_argument("--chunk-photos", type=int, default=8)
    parser.add_argument("--candidates", default="rcan_blur")
    parser.add_argument("--runs", default="one,two,serial,hosts,half,add")
    parser.add_argument("--repeats", type=int, default=2, help="turns of one and two")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bench = Bench(args)
    bench.train()
    runs = args.runs.split(",")
    for turn in range(args.repeats):
        alone, together = parallel_ceiling()
        print(f"hardware ceiling: convolution loop alone {alone:.1f} s, two at once "
              f"{together:.1f} s: two processes gain at most {2 * alone / together:.2f}x now",
              flush=True)
        if "one" in runs:
            bench.measure(f"one{turn}" if turn else "one", bench.photos, 1, 2)
        if "two" in runs:
            bench.measure(f"two{turn}", bench.photos, 2, 1)
    if "serial" in runs:
        bench.measure("serial", bench.photos, 1, 1)
    if "hosts" in runs:
        bench.measure("hosts", bench.photos, 1, 1, hosts=2)
    if "half" in runs:
        half = bench.root / "photos-half"
        half.mkdir(exist_ok=True)
        for path in sorted(bench.photos.iterdir())[:args.photos // 2]:
            if not (half / path.name).exists():
                os.link(path, half / path.name)
        bench.measure("half", half, 1, 2)
    if "add" in runs and (bench.root / "work-one").is_dir():
        make_photos(bench.photos, args.photos + 1, tuple(args.megapixels), args.seed)
        bench.measure("add", bench.photos, 1, 2, workdir=bench.root / "work-one")
        (bench.photos / f"photo-{args.photos:04d}.jpg").unlink()  # the corpus as it was
    print("\n| run | workers | threads | processes | wall s | peak RSS MB | stages built |")
    print("|---|---|---|---|---|---|---|")
    for name, workers, threads, hosts, wall, rss, built in bench.rows:
        stages = sum(n for n, _ in built.values())
        print(f"| {name} | {workers} | {threads} | {hosts} | {wall:.0f} | {rss:.0f} | {stages} |")


if __name__ == "__main__":
    main()
