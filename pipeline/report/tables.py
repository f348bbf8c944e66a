"""The report's tables: the vote margins of every annotator for every candidate, and the
quality against clean references (MeasureTruth's gains and labels against the oracle,
EvaluateTargets' small SR network trained per target)."""

from __future__ import annotations

import numpy as np

from pipeline.quality.scores import ScoreTable
from pipeline.report.gather import Done
from pipeline.report.html import Table


def margin_tables(scored: list[tuple[Done, ScoreTable]]) -> dict[str, list[Table]]:
    """The section "Vote margins": per stage with a score table (gather.score_tables), the
    margin each annotator's vote needed for each candidate (the judge's heads are calibrated
    per candidate, the neighbours' per candidate and sign: "Positive / Negative"); empty when
    no stage scored."""
    tables = []
    for d, table in scored:
        rows = [[name, *(_margin(a, b) for a, b in zip(above, below, strict=True))]
                for name, above, below in zip(table.candidate_names, table.margins,
                                              table.negative_margins, strict=True)]
        tables.append(Table(f"{d.name}: the margin each vote needed", ["candidate",
                            *table.metric_names], rows, "in each annotator's units (the "
                            "judge's heads: dB; the neighbours': net shares); Positive above "
                            "it, Negative below minus it (or minus the second value, where "
                            "there are two); – where the annotator did not judge"))
    return {"Vote margins": tables} if tables else {}


def _margin(positive: float, negative: float) -> str:
    """One margin, "Positive / Negative" where they differ, "–" where the annotator did not
    judge the candidate (NaN)."""
    if np.isnan(positive):
        return "–"
    return f"{positive:.3g}" if positive == negative else f"{positive:.3g} / {negative:.3g}"


def quality_tables(truth: dict | None, evaluation: dict | None) -> dict[str, list[Table]]:
    """The section "Quality against the clean references" from the loaded results (either may
    be None); empty when there are none."""
    tables = truth_tables(truth) if truth is not None else []
    if evaluation is not None:
        tables.append(evaluation_table(evaluation))
        if "photo_gains" in evaluation:
            tables.append(photo_gains_table(evaluation["photo_gains"]))
    return {"Quality against the clean references": tables} if tables else {}


def _rate(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def truth_tables(result: dict) -> list[Table]:
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
    return [Table("Candidates: closer to the clean photo than the original GT?",
                       ["candidate", "patches", "ΔPSNR dB", "closer", "ΔSSIM", "Δedge PSNR dB",
                        "mean abs diff to GT", "P precision", "P recall", "N recall"], rows,
                       f"oracle: Positive when ≥ {result['tau_db']} dB PSNR closer, Negative when "
                       f"≥ {result['tau_db']} dB further"),
            Table("Labels against the oracle, every candidate",
                       ["", "labelled Negative", "labelled Similar", "labelled Positive"], matrix)]


def evaluation_table(result: dict) -> Table:
    rows = []
    for name, row in result["comparison"].items():
        p, s = row["psnr"], row["ssim"]
        gain = p.get("gain_over_original")
        rows.append([name, f"{p['mean']:.3f} ± {p['std']:.3f}",
                     f"{s['mean']:.4f} ± {s['std']:.4f}",
                     "–" if gain is None else f"{gain['mean']:+.3f} ({gain['min']:+.3f} … "
                     f"{gain['max']:+.3f})", p.get("share_of_ceiling", "–")])
    return Table("Does the data help? A small SR network trained per target",
                      ["target", "held-out PSNR dB", "held-out SSIM",
                       "ΔPSNR over original (seeds)", "share of the clean ceiling"], rows,
                      evaluation_caption(result))


def evaluation_caption(result: dict) -> str:
    """What the runs of an evaluation were: training samples, held-out photos, folds, LR
    draws, loss."""
    folds, sizes = result["folds"], result["training_samples"]
    draws = (f"; {result['heldout_draws']} LR draws per held-out photo; trained with "
             f"{result['loss'].upper()} loss")
    if folds == 1:
        return (f"{sizes[0]} training samples; held-out photos: "
                f"{', '.join(result['heldout'])}; mean ± std over seeds{draws}")
    return (f"{folds} folds, every photo held out once ({', '.join(result['heldout'])}); "
            f"{min(sizes)}-{max(sizes)} training samples per fold; mean ± std over folds × "
            f"seeds; gains paired per fold and seed{draws}")


def photo_gains_table(gains: dict[str, dict[str, float]]) -> Table:
    """Per held-out photo, each target's mean PSNR gain over the original GT's network."""
    targets = sorted({t for row in gains.values() for t in row})
    rows = [[photo, *(f"{row[t]:+.3f}" if t in row else "–" for t in targets)]
            for photo, row in gains.items()]
    for label, summarise in (("mean of the photos", np.mean), ("median", np.median)):
        rows.append([label, *(f"{summarise([r[t] for r in gains.values() if t in r]):+.3f}"
                              for t in targets)])
    return Table("Where the data helps: ΔPSNR dB over original per held-out photo",
                 ["held-out photo", *targets], rows,
                 "mean over the seeds that held it out; a smooth photo's PSNR is high, and a "
                 "small change there is many dB: the median is steadier than the mean")
