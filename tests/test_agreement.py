"""Visit-level agreement statistics against published and independently computed values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tfmssass.cli import main
from tfmssass.core import anatomy
from tfmssass.stats.agreement import bland_altman, icc, patient_bootstrap, progression_kappa

#: Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)


def test_icc_reproduces_shrout_and_fleiss_and_pingouin():
    result = icc(SHROUT_FLEISS)
    # The paper's values: ICC(2,1) = 0.29, ICC(3,1) = 0.71. Confidence intervals as printed by
    # pingouin 0.7.0 intraclass_corr for the same table: ICC(A,1) [0.02, 0.76], ICC(C,1) [0.34, 0.95].
    assert result["icc2_1"][0] == pytest.approx(0.289764, abs=1e-6)
    assert result["icc3_1"][0] == pytest.approx(0.714841, abs=1e-6)
    assert result["icc2_1"][1:] == pytest.approx((0.02, 0.76), abs=0.005)
    assert result["icc3_1"][1:] == pytest.approx((0.34, 0.95), abs=0.005)


def test_icc_two_raters_against_pingouin():
    pairs = np.array([[12, 13], [30, 28.5], [5, 5], [44, 47], [20, 19], [7, 9], [33, 33], [16, 14], [0, 1],
                      [25, 27.5]])
    result = icc(pairs)
    # pingouin 0.7.0: ICC(A,1) 0.992787 [0.97, 1.0]; ICC(C,1) 0.992689 [0.97, 1.0]
    assert result["icc2_1"][0] == pytest.approx(0.992787, abs=1e-6)
    assert result["icc3_1"][0] == pytest.approx(0.992689, abs=1e-6)
    assert result["icc2_1"][1] == pytest.approx(0.97, abs=0.005)
    assert result["icc2_1"][2] == pytest.approx(1.0, abs=0.005)
    # a constant offset lowers absolute agreement, not consistency
    shifted = icc(np.column_stack([pairs[:, 0], pairs[:, 0] + 3]))
    assert shifted["icc3_1"][0] == pytest.approx(1.0) and shifted["icc2_1"][0] < 0.99
    opposed = icc(np.array([[1.0, 3], [2, 2], [3, 1]]))  # raters disagree completely: no interval
    assert opposed["icc2_1"][0] < 0 and np.isnan(opposed["icc2_1"][1:]).all()


def test_bland_altman_by_hand():
    scored, reference = np.array([10.0, 12, 7, 30]), np.array([9.0, 12, 9, 27])
    ba = bland_altman(scored, reference)  # differences 1, 0, -2, 3: mean 0.5, SD sqrt(13/3)
    assert ba["bias"] == pytest.approx(0.5) and ba["mae"] == pytest.approx(1.5)
    assert ba["loa_high"] == pytest.approx(0.5 + 1.96 * np.sqrt(13 / 3))


def test_progression_kappa_is_cohens_kappa_at_two_units():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(3)
    reference = rng.integers(-1, 6, 40).astype(float)
    scored = reference + rng.choice([-2, -1, 0, 0, 0, 1], 40)
    expected = cohen_kappa_score(scored >= 2, reference >= 2)
    assert progression_kappa(scored, reference) == pytest.approx(expected)
    assert 0 < expected < 1
    assert np.isnan(progression_kappa([0, 1, 1], [1, 0, 0]))  # nobody progressed on either side: undefined
    assert progression_kappa([3, 2], [0, 1]) == 0  # one side calls all, the other none: no agreement beyond chance


def test_patient_bootstrap_draws_a_patients_intervals_together():
    # A has one interval, B five: a draw of two patients holds 2, 6 or 10 intervals, never 6 every time
    # as a draw of intervals one by one would
    changes = pd.DataFrame({"patient_id": ["A"] + ["B"] * 5, "delta_scored": [2.0, 0, 1, 3, 0, 2],
                            "delta_reference": [2.0, 0, 1, 2, 0, 3]})
    low, high = patient_bootstrap(changes, len, draws=400, seed=0)
    assert (low[0], high[0]) == (2, 10)
    again = patient_bootstrap(changes, len, draws=400, seed=0)
    assert (again[0][0], again[1][0]) == (low[0], high[0])
    # a statistic undefined on some draws (here: those that start with B): they are left out, not counted as 0
    low, high = patient_bootstrap(changes, lambda x: 1.0 if x[0, 0] == 2 else np.nan, draws=400, seed=0)
    assert (low[0], high[0]) == (1.0, 1.0)


def _labels(tmp_path, totals: dict) -> str:
    """A labels.csv whose corners give the wanted visit totals: {(patient, date): (cervical, lumbar)}
    with totals that are multiples of 12 plus a remainder spread over the first corners."""
    rows = []
    for (patient, date), pair in totals.items():
        for view, total in zip(anatomy.VIEWS, pair):
            grades = [total // 12 + (1 if i < total % 12 else 0) for i in range(12)]
            if patient == "C" and view == "lumbar":  # one corner not gradable: imputed, not 0
                grades[-1] = None
            rows.append({"image": f"{patient}_{date}_{view}.dcm", "patient_id": patient, "visit_date": date,
                         "view": view, **dict(zip(anatomy.CORNERS[view], grades))})
    path = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_evaluate_agreement_command(tmp_path):
    truth = {("A", "2018-01-01"): (2, 10), ("A", "2020-01-01"): (4, 12), ("B", "2018-06-01"): (0, 0),
             ("B", "2020-06-01"): (0, 1), ("C", "2017-03-01"): (20, 18), ("C", "2019-03-01"): (26, 20),
             ("D", "2016-01-01"): (5, 5), ("D", "2018-01-01"): (5, 6)}
    labels = _labels(tmp_path, truth)
    offsets = [1, 0, 0, 3, -1, 2, 0, 0]  # scoring − reference per visit
    reference = {key: float(sum(t)) for key, t in truth.items()}
    # C's last lumbar corner is blank: the other 11 (sums 17 and 19) impute it with their mean
    reference[("C", "2017-03-01")] = 20 + 17 + 17 / 11
    reference[("C", "2019-03-01")] = 26 + 19 + 19 / 11
    visits = pd.DataFrame([{"patient_id": p, "visit_date": d, "msasss": reference[(p, d)] + o}
                           for (p, d), o in zip(truth, offsets)])
    visits.to_csv(tmp_path / "visits.csv", index=False)
    result = CliRunner().invoke(main, ["evaluate", "agreement", "--scores", str(tmp_path / "visits.csv"),
                                       "--labels", labels, "--out", str(tmp_path / "ag")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ag" / "agreement.json").read_text())
    assert report["visits_paired"] == 8 and report["intervals_paired"] == 4
    assert report["total"]["mae"] == pytest.approx(7 / 8) and report["total"]["bias"] == pytest.approx(5 / 8)
    # changes: reference A +4, B +1, C +8, D +1; scoring adds offset differences -1, +3, +3, 0
    change = report["change"]
    diffs = np.array([-1, 3, 3, 0])
    assert change["bias"] == pytest.approx(diffs.mean())
    assert change["sdc"] == pytest.approx(1.96 * diffs.std(ddof=1) / np.sqrt(2))
    progression = report["progression"]  # reference progressed: A, C; scoring: A (3), B (4), C (11)
    assert (progression["tp"], progression["fp"], progression["tn"], progression["fn"]) == (2, 1, 1, 0)
    # observed agreement 3/4, chance 3/4 · 1/2 + 1/4 · 1/2 = 1/2: κ = (3/4 - 1/2) / (1 - 1/2)
    assert progression["kappa"] == pytest.approx(0.5)
    # its interval, from draws of the four patients: it holds the estimate and lies within κ's range
    low, high = progression["kappa_ci"]
    assert -1 <= low < 0.5 < high <= 1
    assert "Cohen's κ 0.500 [" in result.output
    assert (tmp_path / "ag" / "bland_altman_total.png").stat().st_size > 1000
    assert (tmp_path / "ag" / "bland_altman_change.png").is_file()
    assert "ICC(2,1)" in result.output
