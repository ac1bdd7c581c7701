"""Stage-2 evaluation on labelled radiographs, and the paper's tables from any confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tfmssass.core.atomic import atomic_path, write_text
from tfmssass.io.labels import load_labels
from tfmssass.stages.grader import metrics as gm
from tfmssass.stages.grader.calibration import (
    calibrate,
    expected_calibration_error,
    plot_reliability,
    read_calibration,
)
from tfmssass.stages.grader.data import (
    corner_samples,
    extract_patches,
    predicted_points,
)
from tfmssass.stages.grader.grades import disk_grades
from tfmssass.stages.grader.train import predict_samples
from tfmssass.stages.runs import load_grader


def write_confusion_report(cm: np.ndarray, out, extra: dict | None = None, name: str = "grades") -> dict:
    """Tables 1 and 2 as CSV, the summary as JSON, and the Markdown text; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"{name}_confusion.csv") as tmp:
        gm.table1(cm).to_csv(tmp)
    with atomic_path(out / f"{name}_per_grade.csv") as tmp:
        gm.per_grade_table(cm).to_csv(tmp, index=False)
    report = {"confusion_matrix": np.asarray(cm).tolist(), **gm.summary(cm),
              "per_grade": gm.per_grade_table(cm).to_dict(orient="records"), **(extra or {})}
    write_text(out / f"{name}_summary.json", json.dumps(report, indent=1, default=float) + "\n")
    write_text(out / f"{name}.md", gm.markdown(cm) + "\n")
    return report


def plot_roc(actual, probabilities, path) -> dict[int, float]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = gm.roc_curves(actual, probabilities)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    for g, (fpr, tpr, area) in curves.items():
        ax.plot(fpr, tpr, label=f"grade {g} (AUC {area:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("One-vs-rest ROC per mSASSS grade")
    ax.legend(loc="lower right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return {g: c[2] for g, c in curves.items()}


def evaluate_grader(run_dir, labels_csv, out, keypoints_run=None) -> dict:
    """Grade every labelled corner of ``labels_csv`` (crops from labelled points, or from a
    stage-1 run's predictions) and write tables, per-level/per-view results, ROC curves and the
    reliability diagram (``calibration.png``). Grades are read from the calibrated probabilities,
    as scoring reads them; the uncalibrated softmax is measured beside them."""

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, config = load_grader(run_dir)
    frame, _ = load_labels(labels_csv, check_images=False)
    points_from = predicted_points(keypoints_run, frame) if keypoints_run else None
    patches, errors = extract_patches(frame, out / "patches", config.patch_depth_px, points_from)
    samples = corner_samples(patches)
    raw = predict_samples(model, config, samples)
    calibration = read_calibration(run_dir)
    probs = calibrate(raw, calibration)
    samples["predicted"] = probs.argmax(axis=1)
    for g in range(4):
        samples[f"p{g}"] = probs[:, g]
    # bridge-consistent grades, per disk (both corners of a level where both are graded)
    samples["consistent"] = samples["predicted"]
    pairs = [(g.index[~g["sup"]][0], g.index[g["sup"]][0]) for _, g in samples.groupby(["patch_path"]) if len(g) == 2]
    if pairs:
        inf, sup = (list(side) for side in zip(*pairs))
        samples.loc[inf, "consistent"], samples.loc[sup, "consistent"] = disk_grades(probs[inf], probs[sup])
    with atomic_path(out / "corners.csv") as tmp:
        samples.drop(columns=["patch_path"]).to_csv(tmp, index=False)
    cm = gm.confusion_matrix(samples["grade"], samples["predicted"])
    aucs = plot_roc(samples["grade"], probs, out / "roc.png")
    by_view = {v: gm.summary(gm.confusion_matrix(g["grade"], g["predicted"])) for v, g in samples.groupby("view")}
    by_level = {lv: gm.summary(gm.confusion_matrix(g["grade"], g["predicted"])) for lv, g in samples.groupby("level")}
    plot_reliability({"grader softmax (balanced training)": (raw, samples["grade"]),
                      "calibrated, training cohort's prior": (probs, samples["grade"])}, out / "calibration.png")
    calibrated = {"fitted": calibration.fitted, "temperature": calibration.temperature,
                  "prior": list(calibration.prior),
                  "ece_before": expected_calibration_error(raw, samples["grade"]),
                  "ece_after": expected_calibration_error(probs, samples["grade"]),
                  "uncalibrated": gm.summary(gm.confusion_matrix(samples["grade"], raw.argmax(axis=1)))}
    report = write_confusion_report(cm, out, {"auc": aucs, "calibration": calibrated, "by_view": by_view,
                                              "by_level": by_level, "skipped": errors, "run": str(run_dir),
                                              "crops_from": "stage-1 predictions" if keypoints_run else "labelled points"})
    report["bridge_consistent"] = write_confusion_report(
        gm.confusion_matrix(samples["grade"], samples["consistent"]), out, name="grades_bridge_consistent")
    return report
