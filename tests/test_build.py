"""End to end: BuildDataset on a few small photos (tiny preset, trainings cut short)."""

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from pipeline.quality import results
from pipeline.shards.dataset import ShardDataset
from pipeline.shards.export import export_folder
from pipeline.shards.spec import summary
from pipeline.shards.verify import verify
from tasks import cli
from tasks.evaluate import EvaluateTargets, MeasureTruth
from tasks.publish import BuildDataset
from tests.conftest import run_tasks
from tests.test_ingest import awkward_folder

pytestmark = pytest.mark.slow

SHORT_TRAININGS = {
    "tiny.TrainEnhancer": {"iterations": 4, "ckpt_every": 2},
    "tiny.TrainEnhancer.elan": {"iterations": 4},
    "tiny.TrainVQVAE2": {"max_epochs": 1},
    "tiny.VQVAEDegradeLR": {"epochs": 1},
    "tiny.TrainSR": {"iterations": 4},
    "tiny.TrainMaskGenerator": {"iterations": 4},
}
CANDIDATES = ["elan_noise", "fused"]


PROVENANCE_SCRIPT = """
import json, sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    stages = json.loads(f.attrs["provenance"])["stages"]
    scores = f["scores"]
    names = [m.decode() for m in scores.attrs["metric_names"]]
    lower = scores.attrs["metric_lower_better"].tolist()
    modes = [m.decode() for m in scores.attrs["metric_modes"]]
    margins = scores.attrs["candidate_margins"].T.tolist()  # (M, K)
print(json.dumps({"c": stages["FuseGT"]["settings"]["c"],
                  "metrics": [{"name": n, "margins": g, "lower_better": b, "mode": m}
                              for n, g, b, m in zip(names, margins, lower, modes)],
                  "lr_recipe": stages["DegradeLR"]["facts"]["recipe_values"]}))
"""


def test_build_verifies_reads_back_and_reruns_nothing(build_env, small_corpus, tmp_path, capsys):
    """The build of an input folder holding every awkward kind of entry (a name that is not
    UTF-8, link loops, a FIFO, ...) beside the photos: it finishes, accounts for every entry,
    keeps the odd name's bytes, and its shards say how they were made (plain h5py)."""
    folder, entries = awkward_folder(tmp_path / "photos", [
        (small_corpus / "chelsea.png").read_bytes(), (small_corpus / "coffee.png").read_bytes()])
    for name in ("rocket.jpg", "astronaut.png"):
        shutil.copyfile(small_corpus / name, folder / name)
    build_env.set("gtforge", "input_dir", folder)
    build_env.set("gtforge", "candidates", ",".join(CANDIDATES))
    build_env.set("gtforge", "references", small_corpus)  # the photos as their own truth
    build_env.set("gtforge", "evaluate", "true")
    for key, value in {"steps": 3, "seeds": 1, "targets": '["original", "hggt", "clean"]'}.items():
        build_env.set("EvaluateTargets", key, value)
    for section, values in SHORT_TRAININGS.items():
        for key, value in values.items():
            build_env.set(section, key, value)
    run_tasks(BuildDataset())
    out = tmp_path / "out"

    verify(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["entries"] == entries + 2
    assert manifest["inputs"]["built"] + manifest["inputs"]["rejected"] == entries + 2
    cafe = b"caf\xe9.png"  # relative to the input folder (format 1.3)
    assert cafe in [os.fsencode(s) for s in manifest["sources"]]
    holding = [e["file"] for e in manifest["shards"]
               if cafe in [os.fsencode(s) for s in e["sources"]]]
    with h5py.File(out / holding[0], "r") as f:
        assert cafe in list(f["sources"][:])
    assert "caf\\xe9.png" in (out / "report" / "index.html").read_text()
    export_folder(out, tmp_path / "exported", kinds=["gt"])
    page = (out / "report" / "index.html").read_text()
    assert "Quality against the clean references" in page and "share of the clean ceiling" in page
    truth = results.load_truth(MeasureTruth().out_dir)
    assert set(truth["candidates"]) == set(CANDIDATES) and truth["candidates"]["fused"]["patches"]
    evaluation = results.load_evaluation(EvaluateTargets().out_dir)
    assert set(evaluation["comparison"]) == {"original", "hggt", "clean"}
    assert evaluation["folds"] == 1 and evaluation["heldout"] and evaluation["loss"] == "l1"
    assert evaluation["training_samples"][0] > 0
    assert set(evaluation["photo_gains"]) == set(evaluation["heldout"])
    assert "Where the data helps" in page and "trained with L1 loss" in page
    capsys.readouterr()
    assert cli.main(["evaluate", "--local-scheduler"]) == 0  # cached: prints the results
    printed = capsys.readouterr().out
    assert '"photo_gains"' in printed and '"runs"' not in printed and "Every run: " in printed
    recorded = subprocess.run([sys.executable, "-c", PROVENANCE_SCRIPT,
                               str(out / manifest["shards"][0]["file"])],
                              capture_output=True, text=True, check=True)
    made = json.loads(recorded.stdout)
    assert made["c"] == 0.3 and made["lr_recipe"]["resize_probs"] == [0.1, 0.85, 0.05]
    assert {m["name"] for m in made["metrics"]} == set(manifest["metric_names"])
    assert all(m["mode"] == "pairwise" for m in made["metrics"])
    margins = np.array([m["margins"] for m in made["metrics"]], np.float64)  # (M, K)
    # each candidate judged by one learned annotator's three heads (the others: NaN)
    judged = np.isfinite(margins)
    assert (judged.sum(axis=0) == 3).all() and (margins[judged] > 0).all()
    assert summary(out)["samples"] == sum(s["samples"] for s in manifest["shards"]) > 10
    assert (out / "report" / "index.html").stat().st_size > 1000
    with h5py.File(out / manifest["shards"][0]["file"], "r") as f:
        names = [n.decode() for n in f["gt_candidates"].attrs["candidate_names"]]
        assert names == CANDIDATES
        n, k = f["labels"].shape
        assert k == len(CANDIDATES) and f["gt_original"].shape == (n, 128, 128, 3)
        assert f["lq"].shape == f["lq_vqvae"].shape == (n, 32, 32, 3)
        assert set(np.unique(f["labels"][:])) <= {-1, 0, 1}

    again = run_tasks(BuildDataset())
    assert "ran successfully" not in again.summary_text

    loader = torch.utils.data.DataLoader(ShardDataset(out, crop=64), batch_size=4, num_workers=2)
    batch = next(iter(loader))
    assert batch["gt"].shape == (4, 3, 64, 64) and batch["lq"].shape == (4, 3, 16, 16)
