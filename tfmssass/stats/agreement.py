"""How a scoring run agrees with reader (or phantom) scores at visit level, as trials report it.

- ICC(2,1) (two-way random effects, absolute agreement) and ICC(3,1) (two-way mixed, consistency)
  with 95% confidence intervals (Shrout & Fleiss 1979; McGraw & Wong 1996), for the total mSASSS
  and for the change between consecutive visits.
- Mean absolute error, and a Bland–Altman analysis: bias (scoring − reference) and 95% limits of
  agreement, bias ± 1.96 SD of the differences.
- Smallest detectable change, 1.96 × SD(difference between the two change scores) / √2, the
  method used for mSASSS (Bruynesteyn et al. 2005), with the two "readers" being the scoring run and
  the reference.
- Progression (Δ ≥ 2) by the scoring run against the reference: sensitivity, specificity and
  Cohen's κ with a 95% interval from bootstrap draws of patients (a 60-patient cohort's κ is
  uncertain by about ±0.15, enough to cross a goal by chance); new syndesmophytes (a corner from
  < 2 to ≥ 2 between consecutive visits, counted over corners both sides graded at both visits):
  sensitivity and positive predictive value.
- Given a scored folder rather than its visits.csv, all of it twice, with the patient's visits
  graded alone (``--longitudinal off``) and together (``monotone``), side by side; and the
  expected calibration error of the corner probabilities before and after calibration.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from tfmssass.core import anatomy
from tfmssass.core.atomic import atomic_path, write_text
from tfmssass.core.config import DEFAULT_IMPUTE
from tfmssass.core.errors import UsageError
from tfmssass.io.labels import load_labels
from tfmssass.scoring.totals import PROGRESSION_DELTA, progression, visit_totals

#: Decimals of the paired totals and changes written beside the statistics.
PAIR_DECIMALS = 4

#: How a scored folder is compared: its visits graded alone, then together.
MODES = ("off", "monotone")


def icc(ratings: np.ndarray, alpha: float = 0.05) -> dict:
    """ICC(2,1) and ICC(3,1) with (1 - alpha) confidence intervals for ratings [n targets, k raters]."""
    x = np.asarray(ratings, float)
    n, k = x.shape
    if n < 2 or k < 2:
        raise ValueError("ICC needs at least 2 targets and 2 raters")
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    msr, msc = ss_rows / (n - 1), ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    q = 1 - alpha / 2
    out = {"n": n, "raters": k}

    icc3 = (msr - mse) / (msr + (k - 1) * mse) if msr + (k - 1) * mse > 0 else float("nan")
    if mse > 0:
        f_obs = msr / mse
        f_l = f_obs / stats.f.ppf(q, n - 1, (n - 1) * (k - 1))
        f_u = f_obs * stats.f.ppf(q, (n - 1) * (k - 1), n - 1)
        out["icc3_1"] = (icc3, (f_l - 1) / (f_l + k - 1), (f_u - 1) / (f_u + k - 1))
    else:  # no residual variance: no interval
        out["icc3_1"] = (icc3, float("nan"), float("nan"))

    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    icc2 = (msr - mse) / denominator if denominator > 0 else float("nan")
    if mse > 0 and 0 < icc2 < 1:
        a = k * icc2 / (n * (1 - icc2))
        b = 1 + k * icc2 * (n - 1) / (n * (1 - icc2))
        v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1)))
        f_star = stats.f.ppf(q, n - 1, v)
        f_2star = stats.f.ppf(q, v, n - 1)
        lower = n * (msr - f_star * mse) / (f_star * (k * msc + (k * n - k - n) * mse) + n * msr)
        upper = n * (f_2star * msr - mse) / (k * msc + (k * n - k - n) * mse + n * f_2star * msr)
        out["icc2_1"] = (icc2, lower, upper)
    else:  # no interval from this formula (ICC ≤ 0 or exact agreement)
        out["icc2_1"] = (icc2, float("nan"), float("nan"))
    return out


def bland_altman(scored: np.ndarray, reference: np.ndarray) -> dict:
    diff = np.asarray(scored, float) - np.asarray(reference, float)
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
    return {"bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd,
            "mae": float(np.abs(diff).mean())}


#: Bootstrap draws of patients behind the progression κ's interval, and their seed (the same folder
#: always gives the same interval).
KAPPA_DRAWS, KAPPA_SEED = 1000, 0


def progression_kappa(scored, reference) -> float:
    """Cohen's κ of progression (Δ ≥ PROGRESSION_DELTA) between two arrays of change; NaN where both
    sides call every interval the same way (κ is undefined there)."""
    s = np.asarray(scored, float) >= PROGRESSION_DELTA
    r = np.asarray(reference, float) >= PROGRESSION_DELTA
    chance = s.mean() * r.mean() + (1 - s.mean()) * (1 - r.mean())
    return float(((s == r).mean() - chance) / (1 - chance)) if len(s) and chance < 1 else math.nan


def patient_bootstrap(changes: pd.DataFrame, statistic, draws: int, seed: int, by: str = "patient_id"):
    """95% intervals (low, high arrays) of ``statistic(pairs)``, pairs [n, 2] of scored and reference
    change, from bootstrap draws of patients: a patient's intervals share films, so they are drawn
    together, not one by one. Draws where the statistic is undefined (NaN) are left out."""
    pairs = changes[["delta_scored", "delta_reference"]].to_numpy(float)
    rows_of = changes.groupby(by).indices
    patients = list(rows_of)
    rng = np.random.default_rng(seed)
    values = np.array([statistic(pairs[np.concatenate([rows_of[p] for p in rng.choice(patients, len(patients))])])
                       for _ in range(draws)], float).reshape(draws, -1)
    bounds = []
    for column in values.T:
        column = column[~np.isnan(column)]
        bounds.append(np.percentile(column, [2.5, 97.5]) if len(column) else (math.nan, math.nan))
    low, high = np.array(bounds, float).T
    return low, high


def reference_visits(labels: pd.DataFrame, impute: str = DEFAULT_IMPUTE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Visit totals and corner table from a labels.csv frame (the same missing-corner rule as score: NG and
    blank are missing alike)."""
    rows = []
    for _, r in labels.iterrows():
        for corner in anatomy.CORNERS[r["view"]]:
            grade = pd.to_numeric(r.get(corner), errors="coerce")  # a raw "NG" cell is missing too
            rows.append({"patient_id": str(r["patient_id"]), "visit_date": r["visit_date"], "view": r["view"],
                         "corner": corner, "grade": float(grade) if pd.notna(grade) else np.nan})
    corners = pd.DataFrame(rows)
    return visit_totals(corners, impute), corners


def _changes(visits: pd.DataFrame) -> pd.DataFrame:
    return progression(visits)[["patient_id", "from_date", "to_date", "delta"]]


def agreement(scores: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """Both frames have patient_id, visit_date, msasss (blank = incomplete visit)."""
    key = ["patient_id", "visit_date"]
    s = scores[key + ["msasss"]].astype({"patient_id": str})
    r = reference[key + ["msasss"]].astype({"patient_id": str})
    both = s.merge(r, on=key, suffixes=("_scored", "_reference"), how="outer", indicator=True)
    paired = both.dropna(subset=["msasss_scored", "msasss_reference"])
    result = {"visits_reference": int(r["msasss"].notna().sum()), "visits_scored": int(s["msasss"].notna().sum()),
              "visits_paired": int(len(paired)),
              "visits_unmatched": int((both["_merge"] != "both").sum())}
    if len(paired) >= 2:
        x = paired[["msasss_scored", "msasss_reference"]].to_numpy(float)
        result["total"] = {**icc(x), **bland_altman(x[:, 0], x[:, 1])}
    ch = _changes(s).merge(_changes(r), on=["patient_id", "from_date", "to_date"],
                           suffixes=("_scored", "_reference")).dropna()
    result["intervals_paired"] = int(len(ch))
    if len(ch) >= 2:
        x = ch[["delta_scored", "delta_reference"]].to_numpy(float)
        ba = bland_altman(x[:, 0], x[:, 1])
        result["change"] = {**icc(x), **ba, "sdc": 1.96 * ba["sd"] / math.sqrt(2)}
        prog_s, prog_r = x[:, 0] >= PROGRESSION_DELTA, x[:, 1] >= PROGRESSION_DELTA
        tp, fn = int((prog_s & prog_r).sum()), int((~prog_s & prog_r).sum())
        tn, fp = int((~prog_s & ~prog_r).sum()), int((prog_s & ~prog_r).sum())
        low, high = patient_bootstrap(ch, lambda pairs: progression_kappa(pairs[:, 0], pairs[:, 1]),
                                      KAPPA_DRAWS, KAPPA_SEED)
        result["progression"] = {
            "threshold": PROGRESSION_DELTA, "tp": tp, "fn": fn, "tn": tn, "fp": fp,
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "kappa": progression_kappa(x[:, 0], x[:, 1]), "kappa_ci": (float(low[0]), float(high[0]))}
    return result, paired, ch


def new_syndesmophytes(scored: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """Corners that go from < 2 to ≥ 2 between consecutive visits of the reference, against the
    scoring's, over corners both sides graded at both visits: sensitivity and PPV."""
    key = ["patient_id", "visit_date", "view", "corner"]
    both = scored[key + ["grade"]].merge(reference[key + ["grade"]], on=key, suffixes=("_s", "_r"))
    both = both.dropna(subset=["grade_s", "grade_r"]).sort_values("visit_date")
    tp = fn = fp = 0
    dates = {p: sorted(v.unique()) for p, v in reference.groupby("patient_id")["visit_date"]}
    for (patient, view, corner), course in both.groupby(["patient_id", "view", "corner"]):
        course = course.set_index("visit_date")
        order = dates.get(patient, [])
        for before, after in zip(order, order[1:]):
            if before not in course.index or after not in course.index:
                continue
            new_s = course.at[before, "grade_s"] < 2 <= course.at[after, "grade_s"]
            new_r = course.at[before, "grade_r"] < 2 <= course.at[after, "grade_r"]
            tp, fn, fp = tp + (new_s and new_r), fn + (new_r and not new_s), fp + (new_s and not new_r)
    return {"tp": tp, "fn": fn, "fp": fp, "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "ppv": tp / (tp + fp) if tp + fp else float("nan")}


def calibration_error(scored_dir, reference: pd.DataFrame) -> dict:
    """ECE of the scored corners' probabilities against the reference grades, as the model gave
    them (calibrated) and with the calibration undone (the grader's softmax)."""
    from tfmssass.scoring.folder import ScoredFolder
    from tfmssass.stages.grader.calibration import (
        Calibration,
        expected_calibration_error,
        uncalibrate,
    )

    folder = ScoredFolder(scored_dir)
    source = folder.source()
    rows = [{"patient_id": f.patient_id, "visit_date": f.visit_date, "view": f.view, "corner": c.corner, "p": c.p}
            for f in folder.records() if f.scored for c in f.graded_corners()]
    key = ["patient_id", "visit_date", "view", "corner"]
    joined = pd.DataFrame(rows, columns=key + ["p"]).merge(reference[key + ["grade"]], on=key).dropna(subset=["grade"])
    if joined.empty or not source.get("calibration"):
        return {}
    calibration = Calibration.from_dict(source["calibration"])
    p, grades = np.array(joined["p"].tolist()), joined["grade"].astype(int).to_numpy()
    return {"corners": int(len(joined)), "temperature": calibration.temperature,
            "ece_before": expected_calibration_error(uncalibrate(p, calibration), grades),
            "ece_after": expected_calibration_error(p, grades)}


def longitudinal_agreement(scored_dir, reference: pd.DataFrame, reference_corners: pd.DataFrame,
                           impute: str = DEFAULT_IMPUTE) -> dict:
    """A scored folder against the reference (:func:`reference_visits`) with its visits graded alone
    and together (:data:`MODES`)."""
    from dataclasses import replace

    from tfmssass.scoring.film import corner_table
    from tfmssass.scoring.folder import ScoredFolder
    from tfmssass.scoring.run import used_corners

    folder = ScoredFolder(scored_dir)
    settings = folder.settings()
    result = {"scored_with": settings.longitudinal}
    for mode in MODES:
        records, not_used, _ = folder.decided_records(replace(settings, longitudinal=mode))
        corners = used_corners(corner_table(records)[0], not_used)
        result[mode], _, _ = agreement(visit_totals(corners, impute), reference)
        result[mode]["new_syndesmophytes"] = new_syndesmophytes(corners, reference_corners)
    result["calibration"] = calibration_error(scored_dir, reference_corners)
    return result


def interval_text(bounds) -> str:
    """A 95% interval as the tables print it ("[–]" where none is defined)."""
    low, high = bounds
    return "[–]" if math.isnan(low) else f"[{low:.3f}, {high:.3f}]"


def _cells(result: dict) -> dict[str, str]:
    """One column of the side-by-side table."""
    out = {}
    if "total" in result:
        t = result["total"]
        out["visit total ICC(2,1)"] = f"{t['icc2_1'][0]:.3f}"
        out["visit total bias (limits of agreement)"] = f"{t['bias']:+.2f} ({t['loa_low']:+.2f} to {t['loa_high']:+.2f})"
    if "change" in result:
        c, p = result["change"], result["progression"]
        out["change ICC(2,1) [95% CI]"] = f"{c['icc2_1'][0]:.3f} [{c['icc2_1'][1]:.3f}, {c['icc2_1'][2]:.3f}]"
        out["change bias (limits of agreement)"] = f"{c['bias']:+.2f} ({c['loa_low']:+.2f} to {c['loa_high']:+.2f})"
        out["progression Δ ≥ 2: sensitivity / specificity / κ [95% CI]"] = (
            f"{p['sensitivity']:.3f} / {p['specificity']:.3f} / {p['kappa']:.3f} {interval_text(p['kappa_ci'])} "
            f"(TP {p['tp']}, FN {p['fn']}, TN {p['tn']}, FP {p['fp']})")
    n = result.get("new_syndesmophytes")
    if n:
        out["new syndesmophytes: sensitivity / PPV"] = (f"{n['sensitivity']:.3f} / {n['ppv']:.3f} "
                                                         f"(TP {n['tp']}, FN {n['fn']}, FP {n['fp']})")
    return out


def longitudinal_markdown(result: dict) -> str:
    columns = {mode: _cells(result[mode]) for mode in MODES}
    lines = [f"intervals paired: {result['off']['intervals_paired']}; visits paired: {result['off']['visits_paired']}",
             "", "| measure | visits alone (off) | visits together (monotone) |", "| --- | --- | --- |"]
    for name in columns["off"]:
        lines.append(f"| {name} | {columns['off'].get(name, '')} | {columns['monotone'].get(name, '')} |")
    c = result.get("calibration")
    if c:
        lines += ["", f"corner probabilities ({c['corners']} corners): ECE {c['ece_before']:.3f} before calibration "
                      f"(the grader's softmax), {c['ece_after']:.3f} after (temperature {c['temperature']:.3f} and "
                      "the training cohort's prior)"]
    return "\n".join(lines)


def corner_agreement(first: pd.DataFrame, second: pd.DataFrame) -> dict:
    """Corner by corner, between two readers: exact agreement and quadratic weighted κ over the
    corners both graded."""
    key = ["patient_id", "visit_date", "view", "corner"]
    both = first.merge(second, on=key, suffixes=("_1", "_2")).dropna(subset=["grade_1", "grade_2"])
    a, b = both["grade_1"].astype(int), both["grade_2"].astype(int)
    return {"graded_by_both": int(len(both)), "differing": int((a != b).sum()),
            "exact_agreement": float((a == b).mean()) if len(both) else float("nan"),
            "quadratic_weighted_kappa": float(cohen_kappa_score(a, b, weights="quadratic", labels=[0, 1, 2, 3]))
            if len(both) and len(set(a) | set(b)) > 1 else float("nan")}


def bland_altman_plot(pairs: np.ndarray, stats_: dict, title: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    mean = pairs.mean(axis=1)
    diff = pairs[:, 0] - pairs[:, 1]
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    ax.scatter(mean, diff, s=14, alpha=0.7)
    for value, style, label in ((stats_["bias"], "-", "bias"), (stats_["loa_low"], "--", "-1.96 SD"),
                                (stats_["loa_high"], "--", "+1.96 SD")):
        ax.axhline(value, color="tab:red", linestyle=style, linewidth=1)
        ax.annotate(f"{label} {value:+.2f}", (1.0, value), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=8)
    ax.set_xlabel("mean of scoring and reference")
    ax.set_ylabel("scoring − reference")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def markdown(result: dict) -> str:
    lines = [f"visits paired: {result['visits_paired']} (reference {result['visits_reference']}, scored "
             f"{result['visits_scored']}, unmatched rows {result['visits_unmatched']}); intervals paired: "
             f"{result['intervals_paired']}; missing corners imputed: {result['impute']}", "",
             "| measure | ICC(2,1) [95% CI] | ICC(3,1) [95% CI] | MAE | bias | limits of agreement |",
             "| --- | --- | --- | ---: | ---: | --- |"]
    for name in ("total", "change"):
        if name in result:
            r = result[name]
            i2, i3 = r["icc2_1"], r["icc3_1"]
            lines.append(f"| {name} mSASSS (n={r['n']}) | {i2[0]:.3f} [{i2[1]:.3f}, {i2[2]:.3f}] | "
                         f"{i3[0]:.3f} [{i3[1]:.3f}, {i3[2]:.3f}] | {r['mae']:.2f} | {r['bias']:+.2f} | "
                         f"{r['loa_low']:+.2f} to {r['loa_high']:+.2f} |")
    if "corners" in result:
        c = result["corners"]
        lines += ["", f"corners graded by both: {c['graded_by_both']}; exact agreement {c['exact_agreement']:.3f}, "
                      f"quadratic weighted κ {c['quadratic_weighted_kappa']:.3f} ({c['differing']} differ)"]
    if "change" in result:
        p = result["progression"]
        lines += ["", f"smallest detectable change: {result['change']['sdc']:.2f} mSASSS units", "",
                  f"progression (Δ ≥ {p['threshold']:g}): sensitivity {p['sensitivity']:.3f}, specificity "
                  f"{p['specificity']:.3f}, Cohen's κ {p['kappa']:.3f} {interval_text(p['kappa_ci'])} (95% CI, "
                  f"bootstrap of patients; TP {p['tp']}, FN {p['fn']}, TN {p['tn']}, FP {p['fp']})"]
    return "\n".join(lines)


def evaluate_agreement(scores_csv, labels_csv, out, impute: str | None = None) -> dict:
    """Write agreement.json, agreement.md, pairs CSVs and Bland–Altman plots into ``out``.

    ``scores_csv``: a visits.csv, a second reader's labels.csv, or a scored folder (its visits.csv,
    and the side-by-side comparison of visits graded alone and together). ``impute``: the
    missing-corner rule of the reference totals; by default a scored folder's own (totals imputed
    by two rules differ where nothing was misread), else :data:`DEFAULT_IMPUTE`."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scored_dir = Path(scores_csv) if Path(scores_csv).is_dir() else None
    if scored_dir is not None:
        from tfmssass.scoring.folder import ScoredFolder

        folder = ScoredFolder(scored_dir)
        if not folder.is_scored():
            raise UsageError(f"{scored_dir}: not a folder written by 'tfmssass score'")
        folder.format_version()  # a newer folder is refused in one line
        scores_csv = scored_dir / "visits.csv"
        impute = impute or folder.settings().impute
    impute = impute or DEFAULT_IMPUTE
    scores = pd.read_csv(scores_csv, dtype={"patient_id": str})
    labels, _ = load_labels(labels_csv, check_images=False)
    reference, reference_corners = reference_visits(labels, impute)
    corner_result = None
    if "image" in scores.columns:  # a second reader's label file (e.g. two 'review export's)
        scores, reader_corners = reference_visits(load_labels(scores_csv, check_images=False)[0], impute)
        corner_result = corner_agreement(reader_corners, reference_corners)
    missing = {"patient_id", "visit_date", "msasss"} - set(scores.columns)
    if missing:
        raise UsageError(f"{scores_csv}: neither a visits.csv nor a labels.csv (missing {', '.join(sorted(missing))})")
    result, paired, changes = agreement(scores, reference)
    result["impute"] = impute
    if corner_result is not None:
        result["corners"] = corner_result
    if "total" in result:
        bland_altman_plot(paired[["msasss_scored", "msasss_reference"]].to_numpy(float), result["total"],
                          "total mSASSS per visit", out / "bland_altman_total.png")
    if "change" in result:
        bland_altman_plot(changes[["delta_scored", "delta_reference"]].to_numpy(float), result["change"],
                          "change in mSASSS between visits", out / "bland_altman_change.png")
    for frame, name in ((paired.drop(columns="_merge"), "visit_pairs.csv"), (changes, "change_pairs.csv")):
        with atomic_path(out / name) as tmp:  # rounded on the way out: no 4.399999999999999
            frame.round(PAIR_DECIMALS).to_csv(tmp, index=False)
    text = markdown(result)
    if scored_dir is not None:
        result["longitudinal"] = longitudinal_agreement(scored_dir, reference, reference_corners, impute)
        text += "\n\n" + longitudinal_markdown(result["longitudinal"])
    write_text(out / "agreement.json", json.dumps(result, indent=1, default=float) + "\n")
    write_text(out / "agreement.md", text + "\n")
    result["text"] = text
    return result
