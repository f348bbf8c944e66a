"""One case of bench.bench_tiles rss, run in a fresh interpreter:

    PYTHONPATH=. .venv/bin/python -m bench.bench_tiles_case EnhanceHR/rcan 6000x4000

Prints one JSON line: peak RSS after the set-up (imports, tiny model, input photos in memory)
and after the stage's per-photo function, in MB, and the function's seconds. Sizes are the
[tiny.*] models of luigi.cfg; tiles and overlaps are the [paper.*] ones.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A synthetic uint8 RGB photo: smooth gradients plus noise."""
    gen = np.random.default_rng(seed)
    out = gen.integers(0, 64, (h, w, 3), dtype=np.uint8)
    out += (np.arange(w, dtype=np.uint16) * 150 // w).astype(np.uint8)[None, :, None]
    out += (np.arange(h, dtype=np.uint16) * 40 // h).astype(np.uint8)[:, None, None]
    return out


def enhance(backbone: str, rgb: np.ndarray):
    from pipeline.train.enhancer import build_generator, enhance

    config = ({"n_feats": 16, "n_groups": 2, "n_blocks": 2, "reduction": 4} if backbone == "rcan"
              else {"channels": 12, "blocks": 4, "windows": [4, 8, 16], "expansion": 2})
    model = build_generator(backbone, config).eval()
    return lambda: enhance(model, rgb, 512, 128, batch=1)


def super_resolve(rgb: np.ndarray):
    from models.rrdb import RRDBNet
    from pipeline.train.sr import super_resolve

    model = RRDBNet(scale=4, num_feat=16, num_block=1, num_grow_ch=8).eval()
    return lambda: super_resolve(model, rgb, 2, 256, 32, keep_low=3.0, batch=4)


def fuse(rgb: np.ndarray):
    from models.cfmg import CFMG
    from pipeline.image.fusion import fuse_photo
    from pipeline.train.cfmg import predict_photo

    model = CFMG(width=8, stages=4, sources=4, bins=25).eval()
    sources = [rgb] + [photo(rgb.shape[1], rgb.shape[0], seed) for seed in (1, 2, 3)]
    return lambda: fuse_photo(sources, predict_photo(model, rgb, 0.3, 256, 4))


def vqvae(rgb: np.ndarray):
    from models.vqvae2 import VQVAE2
    from pipeline.quality import lr_stats
    from pipeline.train import vqvae as vq

    model = VQVAE2(channel=64, n_res_block=2, n_res_channel=32, embed_dim=32, n_embed=256).eval()

    def run():
        clean = vq.downsample(rgb, 4)
        raw = vq.reconstruct(model, clean, "cpu", 512, 128)
        return lr_stats.image_stats(clean, raw, 8.0)

    return run


def score(rgb: np.ndarray, folder: Path):
    from pipeline.image.crops import version_chunks
    from pipeline.image.patches import grid_positions  # noqa: F401  (the stage's own grid)
    from pipeline.quality import annotate
    from pipeline.store.imageio import write_rgb

    paths = []
    for v in range(6):  # the original and five candidates
        paths.append(folder / f"{v}.png")
        write_rgb(paths[-1], rgb if v == 0 else photo(rgb.shape[1], rgb.shape[0], v))
    h, w = rgb.shape[:2]
    ys, xs = np.mgrid[0:h - 512:288, 0:w - 512:288]
    (folder / "scratch").mkdir()

    def run():
        diffs = []
        for _, crops in version_chunks(paths, xs.ravel(), ys.ravel(), 512, 64, folder / "scratch"):
            diffs.append(annotate.difference(crops[:, 0], crops[:, 1:], "mad"))
        return np.concatenate(diffs)

    return run


def main() -> None:
    case, size = sys.argv[1], sys.argv[2]
    w, h = (int(v) for v in size.split("x"))
    torch.set_num_threads(2)
    rgb = photo(w, h)
    with tempfile.TemporaryDirectory() as tmp:
        run = {"EnhanceHR/rcan": lambda: enhance("rcan", rgb),
               "EnhanceHR/elan": lambda: enhance("elan", rgb),
               "SuperResolveGT/x2": lambda: super_resolve(rgb), "FuseGT": lambda: fuse(rgb),
               "VQVAEDegradeLR": lambda: vqvae(rgb),
               "ScorePatches": lambda: score(rgb, Path(tmp))}[case]()
        setup = peak_mb()
        t0 = time.perf_counter()
        with torch.no_grad():
            run()
        seconds = time.perf_counter() - t0
    peak = peak_mb()
    print(json.dumps({"setup_mb": round(setup), "peak_mb": round(peak),
                      "work_mb": round(peak - setup), "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
