"""Calibration and prior correction of grade probabilities, and the joint decoding of a patient's
visits: each against a reference computed the slow, obvious way."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from tfmssass.scoring.longitudinal import (
    CONTRADICTION_LIMIT,
    INCREASE_COST,
    STATES,
    contradicting_films,
    decode_cohort,
    disk_evidence,
    forward_backward,
    log_transitions,
    viterbi,
)
from tfmssass.stages.grader.calibration import (
    Calibration,
    calibrate,
    change_prior,
    em_prior,
    expected_calibration_error,
    fit_calibration,
    fit_scaling,
    uncalibrate,
)

# ---- calibration and priors -------------------------------------------------------------------------


def test_prior_correction_is_bayes_rule_on_a_two_class_example():
    # a balanced-trained classifier says 0.8 for class 1; in a cohort where class 1 is 10% of cases,
    # Bayes: P(1|x) = 0.8*0.1 / (0.8*0.1 + 0.2*0.9) = 0.3077
    p = np.array([[0.2, 0.8]])
    np.testing.assert_allclose(change_prior(p, [0.5, 0.5], [0.9, 0.1]), [[0.18 / 0.26, 0.08 / 0.26]])
    # the same as a logit shift log π_cohort − log π_balanced (T = 1), four grades, two of them impossible
    shift = tuple(np.log([0.9 - 1e-9, 0.1 - 1e-9, 1e-9, 1e-9]) - np.log(0.25))
    got = calibrate(np.array([[0.2, 0.8, 0.0, 0.0]]), Calibration(1.0, shift))
    np.testing.assert_allclose(got[0, :2], [0.18 / 0.26, 0.08 / 0.26], atol=1e-6)
    mild = Calibration(1.4, (0.0, -0.5, -0.9, -1.6))
    np.testing.assert_allclose(uncalibrate(calibrate([[0.1, 0.2, 0.3, 0.4]], mild), mild), [[0.1, 0.2, 0.3, 0.4]],
                               atol=1e-9)


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.5, (6000, 4))
    grades = np.array([rng.choice(4, p=p) for p in softmax(true_logits, axis=-1)])
    overconfident = softmax(true_logits * 2.0, axis=-1)  # what a net with temperature 2 would say
    temperature, _ = fit_scaling(overconfident, grades)
    assert temperature == pytest.approx(2.0, rel=0.06)
    assert expected_calibration_error(softmax(true_logits, axis=-1), grades) < 0.03
    assert expected_calibration_error(overconfident, grades) > 0.08


def test_fit_calibration_under_a_skewed_cohort_brings_the_error_down():
    rng = np.random.default_rng(1)
    prior = np.array([0.7, 0.15, 0.1, 0.05])
    grades = rng.choice(4, size=5000, p=prior)
    x = rng.normal(0, 1, (5000, 4)) + 2.2 * np.eye(4)[grades]  # the uniform-prior posterior is softmax(2.2 x)
    balanced = softmax(2.2 * x * 1.5, axis=-1)  # trained balanced, over-confident by a temperature of 1.5
    counts = {g: int((grades == g).sum()) for g in range(4)}
    cal = fit_calibration(balanced, grades, counts)
    assert cal.temperature == pytest.approx(1.5, rel=0.1)
    np.testing.assert_allclose(cal.prior, prior, atol=0.02)
    # the whole Bayes shift log π − log π_balanced is found to be needed
    assert cal.validation["share_of_bayes_shift"] > 0.9
    np.testing.assert_allclose(np.array(cal.bias) - cal.bias[0], np.log(prior) - np.log(prior[0]), atol=0.25)
    # and none of it for a grader that already answers under the cohort's prior
    natural = softmax(2.2 * x + np.log(prior), axis=-1)
    assert fit_calibration(natural, grades, counts).validation["share_of_bayes_shift"] < 0.1
    assert cal.validation["ece_after"] < 0.03 < cal.validation["ece_before"]


def test_em_estimates_the_prior_of_the_scored_cohort():
    rng = np.random.default_rng(2)
    truth = np.array([0.5, 0.1, 0.3, 0.1])
    grades = rng.choice(4, size=8000, p=truth)
    x = rng.normal(0, 1, (8000, 4)) + 1.8 * np.eye(4)[grades]
    balanced = softmax(1.8 * x, axis=-1)  # the exact posteriors under a uniform prior
    np.testing.assert_allclose(em_prior(balanced, (0.25,) * 4), truth, atol=0.03)


# ---- the decoding against brute force ------------------------------------------------------------------

def _brute(evidence, transitions):
    best, scores = None, {}
    for seq in itertools.product(range(len(STATES)), repeat=len(evidence)):
        s = sum(evidence[t][k] for t, k in enumerate(seq)) + sum(transitions[a, b] for a, b in zip(seq, seq[1:]))
        scores[seq] = s
        if best is None or s > scores[best]:
            best = seq
    return best, scores


def _random_disk(rng, visits):
    out = []
    for _ in range(visits):
        p_inf = rng.dirichlet(np.ones(4) * 0.7) if rng.random() > 0.15 else None
        p_sup = rng.dirichlet(np.ones(4) * 0.7) if rng.random() > 0.15 else None
        out.append(disk_evidence(p_inf, p_sup))
    return np.array(out)


@pytest.mark.parametrize("mode", ["monotone", "soft", "off"])
def test_viterbi_and_posteriors_match_brute_force(mode):
    rng = np.random.default_rng(3)
    transitions = log_transitions(mode, decrease_cost=1.3)
    for visits in (1, 2, 3):
        for _ in range(6):
            evidence = _random_disk(rng, visits)
            best, scores = _brute(evidence, transitions)
            path = viterbi(evidence, transitions)
            assert np.isclose(scores[tuple(path)], scores[best])
            if mode == "monotone":
                assert (np.diff(STATES[path], axis=0) >= 0).all()
            weights = {k: np.exp(v) for k, v in scores.items()}
            total = sum(weights.values())
            marginals, pairs = forward_backward(evidence, transitions)
            for t in range(visits):
                expected = [sum(w for k, w in weights.items() if k[t] == s) / total for s in range(len(STATES))]
                np.testing.assert_allclose(marginals[t], expected, atol=1e-9)
            if visits > 1:
                expected = np.zeros((10, 10))
                for k, w in weights.items():
                    expected[k[0], k[1]] += w / total
                np.testing.assert_allclose(pairs[0], expected, atol=1e-9)


def test_one_corner_alone_decodes_as_the_best_non_decreasing_grade_sequence():
    """Without a partner (the other corner of the disk never graded) the answer is the best
    non-decreasing sequence of one corner's grades; the partner only adds a rise when it is
    bridged along (both corners are 3 together)."""
    rng = np.random.default_rng(4)

    def score(seq, probs):
        rises = sum(b > a for a, b in zip(seq, seq[1:])) + sum(b == 3 > a for a, b in zip(seq, seq[1:]))
        return sum(np.log(probs[t][g]) for t, g in enumerate(seq)) - INCREASE_COST * rises

    for _ in range(20):
        probs = rng.dirichlet(np.ones(4) * 0.6, size=4)
        evidence = np.array([disk_evidence(p, None) for p in probs])
        path = STATES[viterbi(evidence, log_transitions("monotone"))][:, 0]
        best = max((seq for seq in itertools.product(range(4), repeat=4) if list(seq) == sorted(seq)),
                   key=lambda seq: score(seq, probs))
        assert score(path, probs) == pytest.approx(score(best, probs))


def test_the_bridge_pairing_keeps_both_corners_three_together():
    # inf says bridge strongly at the second visit; sup leans to 2 there
    evidence = np.array([disk_evidence([0.8, 0.1, 0.05, 0.05], [0.8, 0.1, 0.05, 0.05]),
                         disk_evidence([0.02, 0.02, 0.06, 0.9], [0.1, 0.1, 0.45, 0.35])])
    path = STATES[viterbi(evidence, log_transitions("monotone"))]
    np.testing.assert_array_equal(path, [[0, 0], [3, 3]])
    assert all((a == 3) == (b == 3) for a, b in STATES)


# ---- patients ------------------------------------------------------------------------------------------

def _patient(probabilities: list, patient="P1", level="L2-L3", view="lumbar", grades=None) -> pd.DataFrame:
    """One disk over visits: per visit (p_inf, p_sup); the per-visit grade is the arg-max unless given."""
    from tfmssass.core import anatomy

    inf, sup = anatomy.level_corners(level)
    rows = []
    for t, pair in enumerate(probabilities):
        for k, (name, p) in enumerate(zip((inf, sup), pair)):
            grade = np.nan if p is None else (grades[t][k] if grades else int(np.argmax(p)))
            rows.append({"patient_id": patient, "visit_date": f"202{t}-01-01", "view": view, "level": level,
                         "corner": name, "grade": grade, **{f"p{g}": (np.nan if p is None else p[g])
                                                            for g in range(4)}})
    return pd.DataFrame(rows)


def test_a_visit_misgraded_alone_is_repaired_by_the_others():
    ok2, doubt1 = [0.05, 0.15, 0.75, 0.05], [0.15, 0.45, 0.35, 0.05]
    frame = _patient([(ok2, ok2), (doubt1, ok2), (ok2, ok2)])
    assert frame["grade"].tolist() == [2, 2, 1, 2, 2, 2]
    decoded = decode_cohort(frame, "monotone").corners
    assert decoded["grade_longitudinal"].tolist() == [2, 2, 2, 2, 2, 2]
    assert decode_cohort(frame, "off").corners["grade_longitudinal"].tolist() == [2, 2, 1, 2, 2, 2]


def test_a_true_new_syndesmophyte_with_strong_evidence_is_kept():
    zero, two = [0.93, 0.04, 0.02, 0.01], [0.03, 0.05, 0.9, 0.02]
    frame = _patient([(zero, zero), (two, zero), (two, zero)])
    decoded = decode_cohort(frame, "monotone")
    assert decoded.corners["grade_longitudinal"].tolist() == [0, 0, 2, 0, 2, 0]
    chance = decoded.chance_of_rise("P1", "2020-01-01", "2021-01-01", 2.0, 2.0)
    assert chance > 0.75


def test_soft_keeps_a_decrease_only_when_the_evidence_outweighs_its_cost():
    two, one = [0.01, 0.04, 0.9, 0.05], [0.02, 0.95, 0.02, 0.01]
    frame = _patient([(two, None), (one, None)])
    assert decode_cohort(frame, "monotone").corners["grade_longitudinal"].dropna().tolist() in ([1, 1], [2, 2])
    assert decode_cohort(frame, "soft", decrease_cost=1.0).corners["grade_longitudinal"].dropna().tolist() == [2, 1]
    assert decode_cohort(frame, "soft", decrease_cost=8.0).corners["grade_longitudinal"].dropna().tolist() != [2, 1]


def test_one_visit_patients_and_corners_not_graded_are_left_as_they_were():
    frame = _patient([([0.4, 0.0, 0.1, 0.5], [0.6, 0.0, 0.0, 0.4])], grades=[(3, 3)])
    decoded = decode_cohort(frame, "monotone").corners
    assert decoded["grade_longitudinal"].tolist() == [3, 3]  # the per-visit bridge rule's answer stays
    gap = _patient([([0.9, 0.1, 0, 0], [0.9, 0.1, 0, 0]), (None, None), ([0.1, 0.1, 0.8, 0], [0.9, 0.1, 0, 0])])
    out = decode_cohort(gap, "monotone").corners
    assert out["grade_longitudinal"].isna().tolist() == [False, False, True, True, False, False]


def test_chance_of_rise_is_the_probability_under_the_chain():
    pa, pb = [0.6, 0.3, 0.08, 0.02], [0.2, 0.3, 0.45, 0.05]
    frame = _patient([(pa, pa), (pb, pb)])
    decoded = decode_cohort(frame, "off")
    # independent visits: P(sum at visit 2 - sum at visit 1 >= 2) by enumeration (bridge pairing: both 3 or neither)
    def disk(p):
        w = {(a, b): p[a] * p[b] for a, b in STATES}
        z = sum(w.values())
        return {k: v / z for k, v in w.items()}
    d1, d2 = disk(pa), disk(pb)
    expected = sum(w1 * w2 for s1, w1 in d1.items() for s2, w2 in d2.items() if sum(s2) - sum(s1) >= 2)
    delta = float(np.nansum(frame["grade"].iloc[2:]) - np.nansum(frame["grade"].iloc[:2]))
    assert decoded.chance_of_rise("P1", "2020-01-01", "2021-01-01", delta, 2.0) == pytest.approx(expected)


# ---- a film that cannot belong to the patient's course -------------------------------------------------

SURE = {g: [0.97 if k == g else 0.01 for k in range(4)] for g in range(4)}  # a grade read with no doubt
LEANING = {0: [0.75, 0.2, 0.04, 0.01], 1: [0.2, 0.75, 0.04, 0.01]}  # a grade read with some doubt


def _films(patient: str, view: str, visits: list[dict]) -> pd.DataFrame:
    """Corner rows of a patient's films of one view; per visit {corner: probabilities}, others surely 0."""
    from tfmssass.core import anatomy

    rows = []
    for t, changed in enumerate(visits):
        for k, name in enumerate(anatomy.CORNERS[view]):
            p = changed.get(name, SURE[0])
            rows.append({"file": f"{patient}/202{t}/{view}.dcm", "patient_id": patient, "visit_date": f"202{t}-01-01",
                         "view": view, "level": anatomy.LEVELS[view][k // 2], "corner": name,
                         "grade": int(np.argmax(p)), **{f"p{g}": p[g] for g in range(4)}})
    return pd.DataFrame(rows)


def test_a_film_read_on_the_wrong_levels_is_found_and_a_true_progression_is_not():
    bridge_low = {"L4_inf": SURE[3], "L5_sup": SURE[3], "L3_inf": SURE[1]}
    shifted = {"L2_inf": SURE[3], "L3_sup": SURE[3], "L1_inf": SURE[1]}  # the same spine, two levels up
    progressing = [{}, {"C3_inf": SURE[2], "C5_sup": SURE[1], "C6_inf": SURE[2], "T1_sup": SURE[1]},
                   {"C3_inf": SURE[3], "C4_sup": SURE[3], "C5_sup": SURE[2], "C6_inf": SURE[3], "C7_sup": SURE[3],
                    "T1_sup": SURE[2], "C2_inf": SURE[1]}]
    noisy = [{"L2_sup": LEANING[1], "L3_inf": SURE[1]}, {"L2_sup": LEANING[0], "L3_inf": LEANING[0]}, {}]
    high = {"C3_inf": SURE[3], "C4_sup": SURE[3], "C3_sup": SURE[1], "C4_inf": SURE[1]}
    low = {"C3_inf": SURE[1], "C4_sup": SURE[2], "C3_sup": SURE[0], "C4_inf": SURE[0]}  # lower than both others
    frame = pd.concat([_films("SHIFT", "lumbar", [bridge_low, shifted, bridge_low]),
                       _films("GROWS", "cervical", progressing),  # 11 rises in 7 corners, none goes down
                       _films("NOISY", "lumbar", noisy),  # two corners read 1 then 0 with some doubt
                       _films("PAIR", "lumbar", [bridge_low, shifted]),  # two films: which one is wrong?
                       _films("DIP", "cervical", [high, low, high]),  # the middle one, not the first
                       _films("ALONE", "lumbar", [shifted])])
    found = contradicting_films(frame)
    assert set(found) == {"SHIFT/2021/lumbar.dcm", "PAIR/2020/lumbar.dcm", "PAIR/2021/lumbar.dcm",
                          "DIP/2021/cervical.dcm"}
    assert all(v >= CONTRADICTION_LIMIT for v in found.values())
    # a corner not graded gives no evidence: with the corners that disagree left blank, nothing is suspect
    blank = _films("SHIFT", "lumbar", [bridge_low, shifted, bridge_low])
    disagree = list(shifted) + list(bridge_low)
    blank.loc[blank["file"].eq("SHIFT/2021/lumbar.dcm") & blank["corner"].isin(disagree), "grade"] = np.nan
    assert contradicting_films(blank) == {}


# ---- a scoring run's tables ------------------------------------------------------------------------------

ZERO, TWO, DOUBT = [0.92, 0.05, 0.02, 0.01], [0.04, 0.12, 0.8, 0.04], [0.2, 0.42, 0.33, 0.05]
PRIOR = [0.6, 0.2, 0.12, 0.08]


def _record(patient, date, view, changed: dict) -> dict:
    """A scored radiograph's record as the pipeline writes it: every corner confidently 0 except
    ``changed`` (corner → probabilities), its grades made by the pipeline's own rule."""
    from tfmssass.core import anatomy
    from tfmssass.stages.grader.grades import grade_corners

    names = anatomy.CORNERS[view]
    p = np.array([changed.get(n, ZERO) for n in names], np.float32)
    grades, confidence, review, codes = (t.numpy() for t in grade_corners(p, np.full(6, 0.9), np.ones(6, bool), 0.6,
                                                                          0.5))
    levels = {lv: {"c": [100.0, 100.0 + 50 * j], "a": [140.0, 100.0 + 50 * j], "point_confidence": 0.9, "cut": True}
              for j, lv in enumerate(anatomy.LEVELS[view])}
    corners = [{"level": anatomy.LEVELS[view][k // 2], "corner": n, "grade": int(grades[k]), "p": p[k].tolist(),
                "confidence": float(confidence[k]), "review": bool(review[k]), "review_code": int(codes[k]),
                "review_reason": ""} for k, n in enumerate(names)]
    file = f"{patient}/{date}/{view}.dcm"
    return {"key": f"{patient}{date}{view}", "file": file, "patient_id": patient, "visit_date": date, "view": view,
            "status": "scored", "reason": "", "levels": levels, "corners": corners,
            "score": int(grades.sum()), "corners_graded": 12, "prior": PRIOR}


def _scored_folder(tmp_path, settings) -> Path:
    from tfmssass.scoring.run import write_outputs

    out = tmp_path / f"out_{settings.longitudinal}_{settings.prior}"
    records = out / ".work" / "records"
    records.mkdir(parents=True)
    course = {"P1": [TWO, DOUBT, TWO],  # misgraded alone at the second visit
              "P2": [DOUBT],  # one visit
              "P3": [ZERO, TWO, TWO]}  # a true new syndesmophyte
    for patient, visits in course.items():
        for t, p in enumerate(visits):
            for view in ("cervical", "lumbar"):
                record = _record(patient, f"202{t}-03-01", view, {"L2_inf": p} if view == "lumbar" else {})
                (records / f"{record['key']}.json").write_text(json.dumps(record))
    (out / ".work" / "settings.json").write_text(json.dumps(dataclasses.asdict(settings)))
    calibration = Calibration(1.3, (0.0, -0.3, -0.6, -0.9), tuple(PRIOR), True).to_dict()
    (out / ".work" / "source.json").write_text(json.dumps({"root": None, "calibration": calibration}))
    write_outputs(out, 14, settings)
    return out


def test_tables_carry_the_longitudinal_grades_beside_the_grades_alone(tmp_path):
    from score_doubles import settings

    # under the training cohort's prior the doubtful corner reads 1 alone (flattened, it would read 2 already)
    joint = _scored_folder(tmp_path, settings(prior="data"))
    alone = _scored_folder(tmp_path, settings(longitudinal="off", prior="data"))
    corners = pd.read_csv(joint / "corners.csv", dtype={"patient_id": str})
    l2 = corners[corners["corner"] == "L2_inf"].set_index(["patient_id", "visit_date"])
    assert l2.loc[("P1", "2021-03-01"), "grade"] == 2 and l2.loc[("P1", "2021-03-01"), "grade_independent"] == 1
    assert l2.loc[("P1", "2021-03-01"), "review"]
    assert "longitudinal: 1 from this radiograph alone, 2" in l2.loc[("P1", "2021-03-01"), "review_reason"]
    assert l2.loc[("P3", "2021-03-01"), "grade"] == 2 and l2.loc[("P3", "2020-03-01"), "grade"] == 0
    # visit totals and progression follow the longitudinal grades
    visits = pd.read_csv(joint / "visits.csv", dtype={"patient_id": str}).set_index(["patient_id", "visit_date"])
    visits_off = pd.read_csv(alone / "visits.csv", dtype={"patient_id": str}).set_index(["patient_id", "visit_date"])
    assert visits.loc["P1", "msasss"].tolist() == [2, 2, 2] and visits_off.loc["P1", "msasss"].tolist() == [2, 1, 2]
    assert visits.loc["P2", "msasss"].tolist() == visits_off.loc["P2", "msasss"].tolist() == [1]  # one visit
    changes = pd.read_csv(joint / "progression.csv", dtype={"patient_id": str}).set_index(["patient_id", "from_date"])
    changes_off = pd.read_csv(alone / "progression.csv", dtype={"patient_id": str}).set_index(["patient_id", "from_date"])
    assert changes.loc[("P3", "2020-03-01"), "progressed"] and changes.loc[("P3", "2020-03-01"), "p_progressed"] > 0.7
    assert changes.loc[("P3", "2020-03-01"), "new_syndesmophytes"] == 1
    # P1 reads the same at every visit but the second: no progression, and less likely together than alone
    assert not changes.loc[("P1", "2021-03-01"), "progressed"] and changes.loc[("P1", "2021-03-01"), "p_progressed"] < 0.5
    assert changes.loc[("P1", "2021-03-01"), "p_progressed"] < changes_off.loc[("P1", "2021-03-01"), "p_progressed"]
    assert changes_off.loc[("P1", "2021-03-01"), "new_syndesmophytes"] == 1  # 1 → 2 alone: a false new lesion
    assert changes.loc[("P1", "2021-03-01"), "new_syndesmophytes"] == 0
    report = (joint / "report.html").read_text()
    # P3's corner goes 0 -> 2 and is a change; P1's stays 2 at every visit (1 alone in 2021): not a change,
    # but a corner to review, saying why
    assert "Corners that change (1)" in report.split("Patient P3")[1].split("<h2>")[0]
    assert "Corners that change" not in report.split("Patient P1")[1].split("<h2>")[0]
    assert "longitudinal: 1 from this radiograph alone, 2 with the patient&#39;s other visits" in report


def test_a_radiograph_that_contradicts_the_other_visits_is_left_out_and_sent_to_a_reader(tmp_path):
    from score_doubles import settings

    from tfmssass.scoring.run import write_outputs

    bridge_low = {"L4_inf": SURE[3], "L5_sup": SURE[3]}
    shifted = {"L2_inf": SURE[3], "L3_sup": SURE[3]}  # the same bridge read two levels up
    folders = {}
    for mode in ("monotone", "off"):
        out = tmp_path / mode
        (out / ".work" / "records").mkdir(parents=True)
        for t, lumbar in enumerate([bridge_low, shifted, bridge_low]):
            for view, changed in (("cervical", {}), ("lumbar", lumbar)):
                record = _record("P1", f"202{t}-03-01", view, changed)
                (out / ".work" / "records" / f"{record['key']}.json").write_text(json.dumps(record))
        (out / ".work" / "settings.json").write_text(json.dumps(dataclasses.asdict(settings(longitudinal=mode))))
        calibration = Calibration(1.0, (0.0, 0.0, 0.0, 0.0), tuple(PRIOR), True).to_dict()
        (out / ".work" / "source.json").write_text(json.dumps({"root": None, "calibration": calibration}))
        counts = write_outputs(out, 6, settings(longitudinal=mode))
        folders[mode] = out
    assert counts["not_used"] == 0  # visits read alone: nothing is weighed against the other visits
    joint = folders["monotone"]
    images = pd.read_csv(joint / "images.csv").set_index("file")
    status = images.loc["P1/2021-03-01/lumbar.dcm", "status"]
    assert status.startswith("not used: the lumbar radiograph contradicts the patient's other visits")
    assert (images.drop(index="P1/2021-03-01/lumbar.dcm")["status"] == "scored").all()
    corners = pd.read_csv(joint / "corners.csv")
    film = corners[corners["file"] == "P1/2021-03-01/lumbar.dcm"].set_index("corner")
    assert film["grade"].isna().all() and film["review"].all()  # no grade on a corner that may be another
    assert film.loc["L2_inf", "grade_independent"] == 3 and film["review_reason"].str.contains("contradicts").all()
    visits = pd.read_csv(joint / "visits.csv").set_index("visit_date")
    assert pd.isna(visits.loc["2021-03-01", "lumbar"]) and visits.loc["2021-03-01", "cervical"] == 0
    assert visits.loc["2020-03-01", "msasss"] == visits.loc["2022-03-01", "msasss"] == 6
    report = (joint / "report.html").read_text()
    assert "P1/2021-03-01/lumbar.dcm: no corner graded</h3>" in report  # not "subtotal 0"
    assert "not used: the lumbar radiograph contradicts the patient&#39;s other visits" in report
    alone = pd.read_csv(folders["off"] / "visits.csv").set_index("visit_date")
    assert alone["lumbar"].tolist() == [6, 6, 6]  # read alone, the wrong levels still add up to the same total


def test_the_prior_of_the_scored_cohort_changes_probabilities_by_bayes_rule(tmp_path):
    from score_doubles import settings

    data = pd.read_csv(_scored_folder(tmp_path, settings(longitudinal="off", prior="data")) / "corners.csv")
    uniform = pd.read_csv(_scored_folder(tmp_path, settings(longitudinal="off", prior="uniform")) / "corners.csv")
    em = pd.read_csv(_scored_folder(tmp_path, settings(longitudinal="off", prior="em")) / "corners.csv")
    cols = ["p0", "p1", "p2", "p3"]
    np.testing.assert_allclose(uniform[cols].to_numpy(), change_prior(data[cols].to_numpy(), PRIOR, [0.25] * 4),
                               atol=2e-4)
    # the doubtful corner: grade 1 under the data prior, but grade 2 is likelier once grade 1 is not favoured
    doubt = (uniform["patient_id"] == "P2") & (uniform["corner"] == "L2_inf")
    assert data.loc[doubt, "grade"].item() == 1
    # this cohort is almost all grade 0: EM moves the prior there and its probabilities towards 0
    assert em["p0"].mean() > data["p0"].mean()


def test_the_default_prior_is_the_training_cohorts_flattened_so_weak_evidence_is_not_all_read_as_0(tmp_path):
    from score_doubles import settings

    from tfmssass.scoring.cohort import tempered

    assert settings().prior == "tempered"
    flat = np.sqrt(PRIOR) / np.sqrt(PRIOR).sum()  # halfway between the training cohort's and uniform, in logs
    np.testing.assert_allclose(tempered(PRIOR), flat)
    folders = {name: _scored_folder(tmp_path, settings(longitudinal="off", prior=name)) for name in ("data", "uniform")}
    folders["tempered"] = _scored_folder(tmp_path, settings(longitudinal="off"))
    corners = {name: pd.read_csv(out / "corners.csv") for name, out in folders.items()}
    cols = ["p0", "p1", "p2", "p3"]
    np.testing.assert_allclose(corners["tempered"][cols].to_numpy(),
                               change_prior(corners["data"][cols].to_numpy(), PRIOR, flat), atol=2e-4)
    # grade 0 loses weight, less than under a uniform prior
    assert (corners["data"]["p0"] > corners["tempered"]["p0"]).all()
    assert (corners["tempered"]["p0"] > corners["uniform"]["p0"]).all()
    # the doubtful corners (1 under the data prior) are read 2, as P1's visits either side read it; the clear
    # ones keep their grades, so those two visits' totals rise by 1 and no other moves
    moved = corners["tempered"]["grade"] != corners["data"]["grade"]
    assert sorted(corners["tempered"].loc[moved, "file"]) == ["P1/2021-03-01/lumbar.dcm", "P2/2020-03-01/lumbar.dcm"]
    assert corners["tempered"].loc[moved, "grade"].tolist() == [2, 2]
    visits = {name: pd.read_csv(out / "visits.csv") for name, out in folders.items()}
    assert (visits["tempered"]["msasss"] - visits["data"]["msasss"]).tolist() == [0, 1, 0, 1, 0, 0, 0]
    assert "flattened (each to the power 0.5" in (folders["tempered"] / "report.html").read_text()


def _reference_labels(path, truth: dict) -> Path:
    """labels.csv with L2_inf's grade per visit from ``truth`` (None: not labelled), every other corner 0."""
    from tfmssass.core import anatomy

    rows = []
    for patient, course in truth.items():
        for t, grade in enumerate(course):
            for view in anatomy.VIEWS:
                grades = {c: (grade if c == "L2_inf" else 0) for c in anatomy.CORNERS[view]}
                rows.append({"image": f"{patient}/{t}/{view}.dcm", "patient_id": patient,
                             "visit_date": f"202{t}-03-01", "view": view, **grades})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_evaluate_agreement_puts_visits_alone_and_together_side_by_side(tmp_path):
    from click.testing import CliRunner
    from score_doubles import settings

    from tfmssass.cli import main

    scored = _scored_folder(tmp_path, settings(prior="data"))  # P1's doubtful corner reads 1 alone
    _reference_labels(tmp_path / "labels.csv", {"P1": [2, 2, 2], "P2": [1], "P3": [0, 2, 2]})
    result = CliRunner().invoke(main, ["evaluate", "agreement", "--scores", str(scored), "--labels",
                                       str(tmp_path / "labels.csv"), "--out", str(tmp_path / "ag")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ag" / "agreement.json").read_text())["longitudinal"]
    alone, together = report["off"]["new_syndesmophytes"], report["monotone"]["new_syndesmophytes"]
    assert (alone["tp"], alone["fp"], alone["fn"]) == (1, 1, 0)  # P1's 1 → 2 alone is a false new lesion
    assert (together["tp"], together["fp"], together["fn"]) == (1, 0, 0)
    assert report["monotone"]["change"]["mae"] < report["off"]["change"]["mae"]
    assert report["calibration"]["corners"] == 24 * 7 and 0 <= report["calibration"]["ece_after"] <= 1
    assert "visits together (monotone)" in result.output and "new syndesmophytes" in result.output


def test_evaluate_agreement_imputes_the_reference_as_the_folder_was_scored(tmp_path):
    """A reference corner missing between visits graded 0 and 2 counts 1 by the visits rule and 0 by the
    segment mean (every other corner 0): the reference totals follow the scored folder's own rule unless
    --impute says otherwise, and the files say which rule was used."""
    from click.testing import CliRunner
    from score_doubles import settings

    from tfmssass.cli import main

    labels = _reference_labels(tmp_path / "labels.csv", {"P1": [2, 2, 2], "P2": [1], "P3": [0, None, 2]})

    def reference_total(folder, *impute):
        out = folder.parent / f"ag{len(impute)}"
        result = CliRunner().invoke(main, ["evaluate", "agreement", "--scores", str(folder), "--labels",
                                           str(labels), "--out", str(out), *impute])
        assert result.exit_code == 0, result.output
        pairs = pd.read_csv(out / "visit_pairs.csv", dtype={"patient_id": str}).set_index(["patient_id", "visit_date"])
        rule = json.loads((out / "agreement.json").read_text())["impute"]
        assert f"missing corners imputed: {rule}" in result.output
        return pairs.loc[("P3", "2021-03-01"), "msasss_reference"], rule

    (tmp_path / "v").mkdir(), (tmp_path / "m").mkdir()
    by_visits = _scored_folder(tmp_path / "v", settings())
    by_mean = _scored_folder(tmp_path / "m", settings(impute="mean"))
    assert reference_total(by_visits) == (1.0, "visits")
    assert reference_total(by_mean) == (0.0, "mean")
    assert reference_total(by_mean, "--impute", "visits") == (1.0, "visits")
