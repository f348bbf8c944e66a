"""Memory set by tiles, not photos: seams of tiled inference and peak memory per photo.

    PYTHONPATH=. .venv/bin/python -m bench.bench_tiles seams [--side 1024] [--tile 512]
        [--overlap 128] [--models rcan,elan]
    PYTHONPATH=. .venv/bin/python -m bench.bench_tiles rss [--sizes 6000x4000,2000x1500]

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
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

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
    args = parser.parse_args()
    torch.set_num_threads(2)
    main_seams(args) if args.what == "seams" else main_rss(args)


if __name__ == "__main__":
    main()
