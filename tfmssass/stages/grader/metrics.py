"""Corner-grading agreement, in the paper's tables and the figures the paper leaves out.

Table 1 is the 4×4 confusion matrix (rows actual 0–3, columns predicted). Table 2 gives, per grade
one-vs-rest, TP/TN/FP/FN, sensitivity, specificity, PPV, F1 and accuracy. The paper's headline
"mean accuracy" (0.916) is the mean of those one-vs-rest accuracies, which counts every true
negative, so it reads higher than the exact 4-class accuracy (trace / total, 0.832 on the paper's
own matrix). Both are reported here, with balanced accuracy and quadratic weighted kappa.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

GRADES = (0, 1, 2, 3)


def confusion_matrix(actual, predicted, classes: int = 4) -> np.ndarray:
    """Rows actual, columns predicted, every grade present even where no corner has it."""
    return sk_confusion_matrix(np.asarray(actual, int), np.asarray(predicted, int), labels=list(range(classes)))


def _ratio(a, b) -> float:
    return float(a) / float(b) if b else math.nan


def per_grade_table(cm: np.ndarray) -> pd.DataFrame:
    """Table 2: one row per grade, one-vs-rest."""
    cm = np.asarray(cm, dtype=np.int64)
    total = cm.sum()
    rows = []
    for g in range(cm.shape[0]):
        tp = cm[g, g]
        fn = cm[g].sum() - tp
        fp = cm[:, g].sum() - tp
        tn = total - tp - fn - fp
        sens, spec, ppv = _ratio(tp, tp + fn), _ratio(tn, tn + fp), _ratio(tp, tp + fp)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        rows.append({"grade": g, "tp": int(tp), "tn": int(tn), "fp": int(fp), "fn": int(fn),
                     "sensitivity": sens, "specificity": spec, "ppv": ppv, "f1": f1,
                     "accuracy": _ratio(tp + tn, total)})
    return pd.DataFrame(rows)


def quadratic_weighted_kappa(cm: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights (scikit-learn's), from the confusion matrix; NaN where
    it is undefined (no corners, or both sides always give one and the same grade)."""
    cm = np.asarray(cm, dtype=np.int64)
    actual, predicted = np.nonzero(cm)
    if cm.sum() == 0 or (len(set(actual)) == 1 and set(actual) == set(predicted)):
        return math.nan
    counts = cm[actual, predicted]
    return float(cohen_kappa_score(np.repeat(actual, counts), np.repeat(predicted, counts),
                                   labels=np.arange(len(cm)), weights="quadratic"))


def summary(cm: np.ndarray) -> dict:
    cm = np.asarray(cm, dtype=np.int64)
    table = per_grade_table(cm)
    total = int(cm.sum())
    present = cm.sum(axis=1) > 0
    return {
        "corners": total,
        "exact_accuracy": _ratio(np.trace(cm), total),
        "exact_correct": int(np.trace(cm)),
        "balanced_accuracy": float(table.loc[present, "sensitivity"].mean()),
        "quadratic_weighted_kappa": quadratic_weighted_kappa(cm),
        "mean_one_vs_rest_accuracy": float(table["accuracy"].mean()),
        "mean_sensitivity": float(table["sensitivity"].mean()),
        "mean_specificity": float(table["specificity"].mean()),
    }


def table1(cm: np.ndarray) -> pd.DataFrame:
    """The paper's Table 1 layout: rows actual, columns predicted, with totals."""
    cm = np.asarray(cm, dtype=np.int64)
    frame = pd.DataFrame(cm, index=[f"actual {g}" for g in GRADES[: len(cm)]],
                         columns=[f"predicted {g}" for g in GRADES[: len(cm)]])
    frame["total"] = frame.sum(axis=1)
    frame.loc["total"] = frame.sum(axis=0)
    return frame


def read_confusion_csv(path) -> np.ndarray:
    """4 rows of 4 integers; an optional header row and index column are accepted."""
    lines = [line for line in open(path, encoding="utf-8").read().splitlines() if line.strip()]
    rows = [[cell.strip() for cell in line.replace(";", ",").split(",")] for line in lines]

    def numeric(cells):
        try:
            return [int(float(c)) for c in cells]
        except ValueError:
            return None

    if rows and numeric(rows[0][-4:]) is None:
        rows = rows[1:]  # header
    values = []
    for cells in rows:
        parsed = numeric(cells[-4:])
        if parsed is None or len(cells) not in (4, 5):
            raise ValueError(f"{path}: expected 4 integers per row (plus an optional label), got {cells}")
        values.append(parsed)
    if len(values) != 4:
        raise ValueError(f"{path}: expected 4 rows (actual grades 0-3), got {len(values)}")
    cm = np.array(values, dtype=np.int64)
    if (cm < 0).any():
        raise ValueError(f"{path}: counts cannot be negative")
    return cm


def roc_curves(actual, probabilities) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """One-vs-rest ROC per grade: (false-positive rate, true-positive rate, AUC)."""
    from sklearn.metrics import auc, roc_curve

    actual = np.asarray(actual)
    out = {}
    for g in GRADES:
        positive = actual == g
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, np.asarray(probabilities)[:, g])
        out[g] = (fpr, tpr, float(auc(fpr, tpr)))
    return out


def markdown(cm: np.ndarray) -> str:
    """Tables 1 and 2 and the summary as Markdown, for the terminal and reports."""
    t1 = table1(cm)
    lines = ["| | " + " | ".join(t1.columns) + " |", "|---" * (len(t1.columns) + 1) + "|"]
    lines += [f"| {idx} | " + " | ".join(str(int(v)) for v in row) + " |" for idx, row in t1.iterrows()]
    t2 = per_grade_table(cm)
    lines += ["", "| grade | TP | TN | FP | FN | sensitivity | specificity | PPV | F1 | accuracy |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in t2.itertuples():
        lines.append(f"| {r.grade} | {r.tp} | {r.tn} | {r.fp} | {r.fn} | {r.sensitivity:.3f} | "
                     f"{r.specificity:.3f} | {r.ppv:.3f} | {r.f1:.3f} | {r.accuracy:.3f} |")
    s = summary(cm)
    lines += ["", f"mean one-vs-rest accuracy {s['mean_one_vs_rest_accuracy']:.5f}, mean sensitivity "
              f"{s['mean_sensitivity']:.5f}, mean specificity {s['mean_specificity']:.5f} (the paper's means)",
              f"exact 4-class accuracy {s['exact_correct']}/{s['corners']} = {s['exact_accuracy']:.4f}; "
              f"balanced accuracy {s['balanced_accuracy']:.4f}; quadratic weighted kappa "
              f"{s['quadratic_weighted_kappa']:.4f}"]
    return "\n".join(lines)
