"""Change between visits over many phantom cohorts, against the goals, cohort by cohort and pooled.

    python bench/cohort_goals.py PHANTOMS SCORED [PHANTOMS SCORED ...] [--bootstrap 1000]

Each pair is a phantom folder (``tfmssass synth``, 3 visits) and the folder ``score`` (or
``bench/phantom_accuracy.py``) wrote from it; its ``visits.csv`` is compared with the phantoms'
labels as ``evaluate agreement`` does. One 60-patient cohort has about 50 intervals, so one
misread interval moves progression κ by about 0.035; each cohort's figures carry the 95% intervals
``evaluate agreement`` gives them (the ICC's from its F distribution, κ's from draws of patients).
The pooled rows put every interval of a difficulty together, with 95% intervals from bootstrap
draws of patients. Goals: issue 28 (realistic change ICC ≥ 0.93, κ ≥ 0.85, |visit bias| ≤ 0.3;
hard 0.75, 0.60, 0.5).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tfmssass.io.labels import load_labels
from tfmssass.stats.agreement import (
    agreement,
    icc,
    interval_text,
    patient_bootstrap,
    progression_kappa,
    reference_visits,
)

#: difficulty → (change ICC, progression κ, |visit bias|) the goals ask for.
GOALS = {"realistic": (0.93, 0.85, 0.3), "hard": (0.75, 0.60, 0.5)}


def cohort_rows(phantoms: Path, scored: Path) -> tuple[dict, pd.DataFrame]:
    """One cohort's figures, and its intervals (scored and reference change per patient)."""
    difficulty = json.loads((phantoms / "synth.json").read_text())["difficulty"]
    labels, _ = load_labels(phantoms / "labels.csv", check_images=False)
    reference, _ = reference_visits(labels)
    visits = pd.read_csv(scored / "visits.csv", dtype={"patient_id": str})
    result, _, changes = agreement(visits, reference)
    row = {"cohort": phantoms.name, "difficulty": difficulty, "intervals": result["intervals_paired"],
           "visit bias": result["total"]["bias"], "change ICC": result["change"]["icc2_1"][0],
           "change ICC 95%": result["change"]["icc2_1"][1:],
           "κ": result["progression"]["kappa"], "κ 95%": result["progression"]["kappa_ci"]}
    return row, changes.assign(patient=phantoms.name + "/" + changes["patient_id"], difficulty=difficulty)


def pooled(changes: pd.DataFrame, draws: int, seed: int = 0) -> dict:
    """Change ICC and κ over all intervals, each with a 95% interval from bootstrap draws of patients."""
    def figures(x):
        return icc(x)["icc2_1"][0], progression_kappa(x[:, 0], x[:, 1])

    (low_icc, low_kappa), (high_icc, high_kappa) = patient_bootstrap(changes, figures, draws, seed, by="patient")
    icc_, kappa = figures(changes[["delta_scored", "delta_reference"]].to_numpy(float))
    return {"intervals": len(changes), "patients": changes["patient"].nunique(),
            "change ICC": (icc_, low_icc, high_icc), "κ": (kappa, low_kappa, high_kappa)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pairs", nargs="+", help="PHANTOMS SCORED, repeated")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws for the pooled intervals")
    args = parser.parse_args()
    if len(args.pairs) % 2:
        raise SystemExit("give folders in pairs: PHANTOMS SCORED [PHANTOMS SCORED ...]")
    rows, changes = zip(*(cohort_rows(Path(p), Path(s)) for p, s in zip(args.pairs[::2], args.pairs[1::2])))
    table, changes = pd.DataFrame(rows), pd.concat(changes)
    print("| cohort | difficulty | intervals | visit bias | change ICC [95%] | κ [95%] |\n"
          "| --- | --- | ---: | ---: | ---: | ---: |")
    for r in table.to_dict("records"):
        print(f"| {r['cohort']} | {r['difficulty']} | {r['intervals']} | {r['visit bias']:+.2f} | "
              f"{r['change ICC']:.3f} {interval_text(r['change ICC 95%'])} | "
              f"{r['κ']:.3f} {interval_text(r['κ 95%'])} |")
    print("\n| difficulty | cohorts | goal met: change ICC / κ / visit bias | pooled intervals (patients) "
          "| pooled change ICC [95%] | pooled κ [95%] |\n| --- | ---: | --- | --- | --- | --- |")
    for difficulty, group in table.groupby("difficulty"):
        goal_icc, goal_kappa, goal_bias = GOALS.get(difficulty, (np.nan,) * 3)
        met = (f"{(group['change ICC'] >= goal_icc).sum()} / {(group['κ'] >= goal_kappa).sum()} / "
               f"{(group['visit bias'].abs() <= goal_bias).sum()} of {len(group)}")
        p = pooled(changes[changes["difficulty"] == difficulty], args.bootstrap)
        print(f"| {difficulty} | {len(group)} | {met} | {p['intervals']} ({p['patients']}) | "
              f"{p['change ICC'][0]:.3f} {interval_text(p['change ICC'][1:])} | "
              f"{p['κ'][0]:.3f} {interval_text(p['κ'][1:])} |")


if __name__ == "__main__":
    main()
