"""Memory set by tiles, not photos: seams of tiled inference and peak memory per photo.

    PYTHONPATH=. .venv/bin/python -m bench.bench_tiles seams [--side 1024] [--tile 512]
        [--overlap 128] [--models rcan,elan]
    PYTHONPATH=. .venv/bin/python -m bench.bench_tiles rss [--sizes 6000x4000,2000x1500]
    PYTHONPATH=. .venv/bin/python -m bench.bench_tiles speed --workdir W [--tiles 256,512]
        [--overlap 128] [--photos 6] [--repeats 3]

seams: random-weight paper-size RCAN (64 channels, 10 x 20 RCABs) and ELAN (180 channels, 36
blocks, windows 4/8/16), their zero-initialised tails given torch's default conv init (else
both are the identity), applied to a side x side photo (skimage's astronaut, resized with
INTER_CUBIC) whole and in tiles (pipeline.train.tiling.tile_outputs, the EnhanceHR path before
its uint8 conversion): max and 99.9th percentile of |tiled - whole| on the [0,1] scale, with
the spread of the correction (output - input). Random deep networks correct by far more than
a trained enhancer (ELAN: std 2.8); the correction is linear in the tail's weights, so the
seam scales with it, and `max_at_correction_0.1` is the seam of the same network with its tail
scaled to a correction of std 0.1.

rss: each stage's per-photo function (tiny models of luigi.cfg's [tiny.*] sizes, the paper
preset's tiles) on a synthetic photo of each size, in a fresh interpreter per case: peak RSS
(ru_maxrss of the child) and the part above the set-up (imports, model, the input photos in
memory). File decoding and PNG encoding are left out (one uint8 copy of the photo each).

speed: EnhanceHR's inference (pipeline.train.enhancer.enhance, one torch thread) with every
trained enhancer of a build's workdir W on the first `photos` photos W ingested, at each tile
side in `tiles`, in a rotating order (bench/rotation.py): seconds per tile side as median
(min-max) over repeats, each side's time against the largest's, and the mean |difference| of
its output from the largest's, in grey levels (tiles change where the seams fall, nothing else).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.train.precision import FP32
from pipeline.train.tiling import tile_outputs


def _photo(side: int) -> np.ndarray:
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)


def _paper_model(name: str) -> torch.nn.Module:
    from models.elan import ELAN
    from models.rcan import RCAN

    torch.manual_seed(0)
    model = RCAN() if name == "rcan" else ELAN()
    model.tail.reset_parameters()  # random, not the identity
    return model.eval()


@torch.no_grad()
def seams(name: str, side: int, tile: int, overlap: int) -> dict:
    """Whole against tiled for one paper-size random network on a side x side photo."""
    model, rgb = _paper_model(name), _photo(side)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    t0 = time.perf_counter()
    whole = model(x)[0]
    t_whole = time.perf_counter() - t0
    errors = torch.zeros_like(whole)
    t0 = time.perf_counter()
    for (rows, cols), kept in tile_outputs(lambda t: FP32.forward(model, t), rgb, tile, overlap,
                                           align=getattr(model, "multiple", 1), batch=1):
        errors[:, rows, cols] = (kept - whole[:, rows, cols]).abs()
    t_tiled = time.perf_counter() - t0
    return {"model": name, "side": side, "tile": tile, "overlap": overlap,
            "max": float(errors.max()), "p99.9": float(torch.quantile(errors.flatten()[::7],
                                                                      0.999)),
            "correction_std": float((whole - x[0]).std()),
            "max_at_correction_0.1": float(errors.max()) * 0.1 / float((whole - x[0]).std()),
            "whole_s": round(t_whole, 1),
            "tiled_s": round(t_tiled, 1)}


def main_seams(args) -> None:
    for name in args.models.split(","):
        side = args.side if name == "rcan" or not args.elan_side else args.elan_side
        tile = args.tile if name == "rcan" or not args.elan_tile else args.elan_tile
        print(json.dumps(seams(name, side, tile, args.overlap)), flush=True)


CASES = ("EnhanceHR/rcan", "EnhanceHR/elan", "SuperResolveGT/x2", "FuseGT", "VQVAEDegradeLR",
         "ScorePatches")


def main_rss(args) -> None:
    sizes = args.sizes.split(",")
    rows = {}
    for case in args.cases.split(","):
        for size in sizes:
            out = subprocess.run([sys.executable, "-m", "bench.bench_tiles_case", case, size],
                                 capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            rows[case, size] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps({"case": case, "size": size, **rows[case, size]}), flush=True)
    big, small = sizes[0], sizes[-1]
    print(f"\n| stage | peak RSS {big} | peak RSS {small} | ratio | above set-up {big} | "
          f"above set-up {small} | seconds {big} |")
    print("|---|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        if (case, big) not in rows or (case, small) not in rows:
            continue
        b, s = rows[case, big], rows[case, small]
        print(f"| {case} | {b['peak_mb']:.0f} MB | {s['peak_mb']:.0f} MB | "
              f"{b['peak_mb'] / s['peak_mb']:.2f} | {b['work_mb']:.0f} MB | {s['work_mb']:.0f} MB "
              f"| {b['seconds']:.0f} |")


def tile_speed(model: torch.nn.Module, photos: list[np.ndarray], tiles: list[int],
               overlap: int, repeats: int) -> tuple[dict[int, list[float]], dict[int, list]]:
    """({tile: wall seconds per repeat}, {tile: its outputs}) of `enhance` on `photos`."""
    from bench import rotation
    from pipeline.train.enhancer import enhance

    outputs: dict[int, list] = {}

    def case(tile: int):
        def run() -> None:
            outputs[tile] = [enhance(model, p, tile, overlap, "cpu") for p in photos]
        return rotation.timed(run)

    times = rotation.rotate({t: case(t) for t in tiles}, repeats)
    return {t: [x.wall for x in times[t]] for t in tiles}, outputs


def main_speed(args) -> None:
    from bench import rotation
    from pipeline.store.imageio import read_rgb
    from pipeline.train.enhancer import build_generator
    from pipeline.train.loop import load_checkpoint

    torch.set_num_threads(1)
    work, tiles = args.workdir, [int(t) for t in args.tiles.split(",")]
    photos = [read_rgb(p) for p in sorted(work.glob("IngestHR/*/images/*.png"))[:args.photos]]
    last = tiles[-1]
    print(f"| enhancer | {' | '.join(f'tile {t}: s' for t in tiles)} | "
          f"{' | '.join(f'{t} / {last}' for t in tiles[:-1])} | mean abs difference |")
    print("|---" * (2 * len(tiles) + 1) + "|")
    for manifest in sorted(work.glob("TrainEnhancer/*/manifest.json")):
        params = json.loads(manifest.read_text())["params"]
        backbone = params["backbone"]
        model = build_generator(backbone, params[backbone])
        model.load_state_dict(load_checkpoint(manifest.with_name("generator.pt"), "cpu"))
        walls, outputs = tile_speed(model.eval(), photos, tiles, args.overlap, args.repeats)
        diff = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for t in tiles[:-1]
                        for a, b in zip(outputs[t], outputs[last], strict=True)])
        seconds = " | ".join(rotation.spread(walls[t]).fmt(".1f") for t in tiles)
        ratios = " | ".join(rotation.ratio(walls[t], walls[last]).fmt(".2f", "x")
                            for t in tiles[:-1])
        print(f"| {backbone}_{params['degradation']} | {seconds} | {ratios} | {diff:.4f} |",
              flush=True)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("seams")
    s.add_argument("--side", type=int, default=1024)
    s.add_argument("--tile", type=int, default=512)
    s.add_argument("--overlap", type=int, default=128)
    s.add_argument("--models", default="rcan,elan")
    s.add_argument("--elan-side", type=int, default=0, help="ELAN's side if not --side")
    s.add_argument("--elan-tile", type=int, default=0, help="ELAN's tile if not --tile")
    r = sub.add_parser("rss")
    r.add_argument("--sizes", default="6000x4000,2000x1500")
    r.add_argument("--cases", default=",".join(CASES))
    v = sub.add_parser("speed")
    v.add_argument("--workdir", type=Path, required=True)
    v.add_argument("--tiles", default="256,512")
    v.add_argument("--overlap", type=int, default=128)
    v.add_argument("--photos", type=int, default=6)
    v.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    {"seams": main_seams, "rss": main_rss, "speed": main_speed}[args.what](args)


if __name__ == "__main__":
    main()
