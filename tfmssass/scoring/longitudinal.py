"""Grading a patient's visits together: the most probable course of each disk space over time.

Syndesmophytes and bridges do not heal, so a corner graded 2 at one visit and 1 at the next is a
misreading at one of them. Graded alone, each visit's errors add to the change between visits,
and change is what trials measure. Here the two corners of a disk space are decoded over all of a
patient's visits at once:

- A disk's state at a visit is its corners' grades (inf, sup): nine pairs below 3, or both 3 (a
  bridge spans the disk, so its corners are 3 together: the bridge rule).
- The evidence for a state is the product of the two corners' calibrated probabilities at that
  visit (a corner not graded there gives none: it is left blank, and the chain goes on across it).
  Each visit's posterior carries the cohort's prior, so a long chain leans towards the common
  grades. A hidden Markov model, which counts the prior once, was tried and dropped: on noisy
  (``hard``) tuning phantoms its later visits followed weak evidence to the rare grades. Visit
  totals then rose by +1.6 on average, against −0.4 here (bench/RESULTS.md).
- ``monotone``: the most probable sequence in which neither corner ever goes down (Viterbi over
  visits × 10 states). ``soft``: a corner may go down, at a cost of ``decrease_cost`` (natural-log
  units of evidence) per grade step, since readers do record decreases; ``off``: each visit alone.
- In both joint modes a corner whose grade rises between two visits costs ``INCREASE_COST``: most
  corners do not change in two years, so a rise must be supported by the evidence, not just
  allowed by it. Without it, the small doubts of 24 corners add up to a likely "progression" in
  a patient whose films all read the same.
- The same chain gives each decoded grade's posterior probability (forward–backward), and the
  distribution of the change between two visits, from which the probability that the mSASSS rose
  by 2 or more follows.

A disk graded at fewer than two visits keeps its per-visit grades, so a one-visit patient is
scored exactly as before.

Before decoding, :func:`contradicting_films` finds the radiographs that cannot belong to the
patient's course at all: read with the levels named on the wrong vertebrae (a film taken for upside
down, a chain slipped by a level), a film shows bridges where the visits before and after show none.
Decoding would spread that error over the patient's change; it is left out and sent to a reader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from tfmssass.core import anatomy
from tfmssass.core.config import PROBABILITY_FLOOR

MODES = ("monotone", "soft", "off")
#: ``soft``: the evidence a one-step decrease of a corner must overcome, in natural-log units
#: (3.0: the lower grade must be about 20 times more probable at that visit than the other course).
DECREASE_COST = 3.0
#: A corner's grade rising between two visits, before the evidence: about 1 corner in 8 (the
#: phantom cohort's mean rate over two years; trials report 5-10% of corners progressing).
INCREASE_COST = float(np.log(8.0))
#: A disk's states: (inf grade, sup grade); both corners are 3 together or neither is.
STATES = np.array([(a, b) for a in range(3) for b in range(3)] + [(3, 3)])
#: [10, 10] from state i to state j: grade steps down, and corners that rise.
DROPS = np.maximum(STATES[:, None, :] - STATES[None, :, :], 0).sum(axis=2)
RISES = (STATES[None, :, :] > STATES[:, None, :]).sum(axis=2)
#: A corner's probabilities of grades 0-3 in the corner tables.
P_COLUMNS = ["p0", "p1", "p2", "p3"]
#: The evidence (natural-log units) against a radiograph belonging to its patient's course above
#: which it is left out: the patient's other films of the view and this one read alone are e^12
#: (about 160 000) times likelier than one course in which no corner goes down. On the phantom cohorts
#: of bench/RESULTS.md (issue 29, twelfth pass) films read with their levels misplaced scored 13.5-36;
#: 99% of the others scored under 5, and the two over 12 fell under it once the misplaced film that
#: contradicted them was left out.
CONTRADICTION_LIMIT = 12.0


def disk_evidence(p_inf, p_sup) -> np.ndarray:
    """Log evidence [10] for each state from the two corners' probabilities [4] (None: not graded)."""
    out = np.zeros(len(STATES))
    for column, p in ((0, p_inf), (1, p_sup)):
        if p is not None:
            out += np.log(np.clip(np.asarray(p, float), PROBABILITY_FLOOR, 1.0))[STATES[:, column]]
    return out


def log_transitions(mode: str, decrease_cost: float = DECREASE_COST) -> np.ndarray:
    """[10, 10] log weight of going from state i at one visit to state j at the next."""
    if mode not in MODES:
        raise ValueError(f"longitudinal mode must be one of {MODES}")
    if mode == "off":
        return np.zeros(DROPS.shape)
    if mode == "monotone":
        return np.where(DROPS == 0, 0.0, -np.inf) - INCREASE_COST * RISES
    return -float(decrease_cost) * DROPS - INCREASE_COST * RISES


def viterbi(evidence: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """The most probable state sequence [T] for log evidence [T, 10]."""
    score = evidence[0].copy()
    back = np.zeros(evidence.shape, int)
    for t in range(1, len(evidence)):
        options = score[:, None] + transitions
        back[t] = options.argmax(axis=0)
        score = options.max(axis=0) + evidence[t]
    path = [int(score.argmax())]
    for t in range(len(evidence) - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return np.array(path[::-1])


def forward_backward(evidence: np.ndarray, transitions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of each visit's state [T, 10] and of each consecutive pair [T-1, 10, 10], over all
    sequences the transitions allow, each weighted by its evidence."""
    steps = len(evidence)
    alpha, beta = np.zeros(evidence.shape), np.zeros(evidence.shape)
    alpha[0] = evidence[0]
    for t in range(1, steps):
        alpha[t] = logsumexp(alpha[t - 1][:, None] + transitions, axis=0) + evidence[t]
    for t in range(steps - 2, -1, -1):
        beta[t] = logsumexp(transitions + (evidence[t + 1] + beta[t + 1])[None, :], axis=1)
    total = logsumexp(alpha[-1], axis=0)
    marginals = np.exp(alpha + beta - total)
    pairs = np.array([np.exp(alpha[t][:, None] + transitions + (evidence[t + 1] + beta[t + 1])[None, :] - total)
                      for t in range(steps - 1)]).reshape(steps - 1, len(STATES), len(STATES))
    return marginals, pairs


def disk_over_visits(disk: pd.DataFrame, level: str):
    """One patient's disk (its corner rows at every visit): the visit dates, the row index of each corner
    graded there ([inf, sup], None where not graded) and the log evidence [visits, 10]."""
    dates = sorted(disk["visit_date"].unique())
    rows, evidence = [], []
    for date in dates:
        at = disk[(disk["visit_date"] == date) & disk["grade"].notna()]
        pair = [next(iter(at.index[at["corner"] == name]), None) for name in anatomy.level_corners(level)]
        rows.append(pair)
        evidence.append(disk_evidence(*(None if i is None else disk.loc[i, P_COLUMNS].to_numpy(float)
                                        for i in pair)))
    return dates, rows, np.array(evidence)


def _best_monotone(evidence: np.ndarray, steps: np.ndarray) -> float:
    """Log evidence [T, 10] of the best course through ``steps`` [10, 10] (0 for T = 0)."""
    if len(evidence) == 0:
        return 0.0
    score = evidence[0].copy()
    for t in range(1, len(evidence)):
        score = (score[:, None] + steps).max(axis=0) + evidence[t]
    return float(score.max())


def contradictions(disks: list[np.ndarray], rise_cost: float = 0.0) -> np.ndarray:
    """[films]: how much likelier (log) each film is read alone, the others as one course, than all
    as one course in which no corner goes down: over the view's disks, each log evidence [films, 10]."""
    steps = np.where(DROPS == 0, -rise_cost * RISES, -np.inf)
    films = len(disks[0]) if disks else 0
    total = np.zeros(films)
    for evidence in disks:
        together = _best_monotone(evidence, steps)  # the same for every film left out
        total += [_best_monotone(np.delete(evidence, k, axis=0), steps) + float(evidence[k].max()) - together
                  for k in range(films)]
    return total


def contradicting_films(corners: pd.DataFrame, limit: float = CONTRADICTION_LIMIT) -> dict[str, float]:
    """{file: evidence against it} for the radiographs (``corners`` as :func:`decode_cohort` takes,
    with ``file``) whose grades contradict the patient's other radiographs of the view by ``limit`` or
    more. The test counts rises as free, so a patient who truly progresses is not suspected. Per
    patient and view, one film goes at a time and the rest are weighed again without it: of those over
    the limit, the one whose removal leaves the likeliest course with rises costed as in decoding (the
    middle film of three that reads lower than both others, not the first). Of two films that
    contradict each other neither can be believed, so both go."""
    found: dict[str, float] = {}
    for _, films in corners.groupby(["patient_id", "view"], sort=False):
        file_of = films.groupby("visit_date")["file"].first()  # one radiograph of the view per visit
        files = list(file_of)
        disks = []
        for level, disk in films.groupby("level", sort=False):
            dates, _, evidence = disk_over_visits(disk, level)
            by_date = dict(zip(dates, evidence))
            disks.append(np.array([by_date.get(d, np.zeros(len(STATES))) for d in file_of.index]))
        while len(files) >= 2:
            against = contradictions(disks)
            over = np.flatnonzero(against >= limit)
            if not len(over):
                break
            costed = contradictions(disks, INCREASE_COST)[over]
            out = over[costed >= costed.max() - 1e-6]
            found.update({files[k]: round(float(against[k]), 1) for k in out})
            files = [f for k, f in enumerate(files) if k not in set(out)]
            disks = [np.delete(evidence, out, axis=0) for evidence in disks]
    return found


#: Change of a disk's two grades together for each pair of states: [10, 10] in -6..6.
STATE_CHANGE = STATES.sum(axis=1)[None, :] - STATES.sum(axis=1)[:, None]


def change_distribution(pair: np.ndarray) -> np.ndarray:
    """P(change of the disk's grade sum = d) for d in -6..6, from a pair posterior [10, 10]."""
    return np.bincount((STATE_CHANGE + 6).ravel(), weights=pair.ravel(), minlength=13)


@dataclass
class Decoded:
    """The cohort's corners with longitudinal grades, and the change distributions of its intervals."""

    corners: pd.DataFrame  # the input rows plus grade_longitudinal and p_longitudinal
    changes: dict  # (patient, from_date, to_date) → (distribution over -72..72 [145], decoded change)

    def chance_of_rise(self, patient, from_date, to_date, delta, threshold: float) -> float | None:
        """P(Δ mSASSS ≥ threshold) between two visits of a patient whose Δ (from the decoded grades,
        imputation included) is ``delta``. The corners graded at both visits are uncertain as the
        chain says; the rest of Δ (imputed corners) is taken as it is."""
        if delta is None or pd.isna(delta) or (patient, from_date, to_date) not in self.changes:
            return None
        distribution, decoded = self.changes[(patient, from_date, to_date)]
        offset = float(delta) - decoded
        values = np.arange(-72, 73) + offset
        return float(distribution[values >= threshold - 1e-9].sum())


def _add(total: np.ndarray, disk: np.ndarray) -> np.ndarray:
    return np.convolve(total, disk)[6:6 + len(total)]  # a disk moves the sum by -6..6; 145 values stay


def decode_cohort(corners: pd.DataFrame, mode: str = "monotone", decrease_cost: float = DECREASE_COST) -> Decoded:
    """``corners``: one row per corner of the radiographs used, with patient_id, visit_date, view,
    level, corner, grade (the per-visit grade; NaN when not graded) and p0..p3. Returns the rows
    with ``grade_longitudinal`` (NaN where not graded), ``p_longitudinal`` (its posterior) and
    ``decoded`` (whether the disk's chain was decoded: two or more visits graded), and every
    consecutive interval's change distribution."""
    transitions = log_transitions(mode, decrease_cost)
    frame = corners.copy()
    frame["grade_longitudinal"] = frame["grade"].astype(float)
    frame["p_longitudinal"] = np.nan
    frame["decoded"] = False
    graded = frame["grade"].notna()
    probabilities = frame.loc[graded, P_COLUMNS].to_numpy(float)
    frame.loc[graded, "p_longitudinal"] = [float(p[int(g)]) for p, g in zip(probabilities, frame.loc[graded, "grade"])]
    changes: dict = {}
    visit_dates = {p: sorted(g.unique()) for p, g in frame.groupby("patient_id")["visit_date"]}
    for (patient, view, level), disk in frame.groupby(["patient_id", "view", "level"], sort=False):
        dates, rows, evidence = disk_over_visits(disk, level)
        seen = [all(i is not None for i in pair) for pair in rows]
        marginals, pairs = forward_backward(evidence, transitions)
        if mode != "off" and sum(any(i is not None for i in pair) for pair in rows) >= 2:
            path = STATES[viterbi(evidence, transitions)]
            for t, pair in enumerate(rows):
                for column, index in enumerate(pair):
                    if index is not None:
                        grade = path[t][column]
                        frame.loc[index, "grade_longitudinal"] = float(grade)
                        frame.loc[index, "p_longitudinal"] = float(marginals[t][STATES[:, column] == grade].sum())
                        frame.loc[index, "decoded"] = True
        # the change of this disk between consecutive visits of the patient (both corners graded at both)
        order = visit_dates[patient]
        for t in range(len(dates) - 1):
            if not (seen[t] and seen[t + 1]) or order.index(dates[t + 1]) != order.index(dates[t]) + 1:
                continue
            key = (patient, dates[t], dates[t + 1])
            total, decoded = changes.get(key, (np.eye(145)[72], 0.0))
            grades = [frame.loc[i, "grade_longitudinal"] for i in rows[t] + rows[t + 1]]
            changes[key] = (_add(total, change_distribution(pairs[t])), decoded + grades[2] + grades[3]
                            - grades[0] - grades[1])
    return Decoded(frame, changes)
