"""Grade probabilities a trial can read as probabilities: a temperature and the cohort's prior.

The grader trains on balanced epochs (every grade equally often), so in theory its softmax answers
as if each grade were equally common, and Bayes' rule would add log π_cohort − log π_balanced to its
logits (post-hoc "logit adjustment", Menon et al. 2021). Softmax outputs are also over- or
under-confident; a temperature T rescales the logits (Guo et al. 2017). Both are fitted together
after training, on the run's validation corners, which come from the training cohort and carry its
grade frequencies:

    calibrated = softmax(log p / T + b),   b = a · (log π − log π_balanced)

T and the share a ∈ [0, 1] of the Bayes shift minimise the validation NLL. The fit does not assume
the theory holds: a grader whose best epoch, augmentation or architecture leave it nearer the
cohort's prior than the balanced one gets a smaller share (bench/RESULTS.md has the demo's). The calibrated probabilities assume the training cohort's
grade frequencies π (kept in the run as ``calibration.json`` with T and b). Scoring may change that
prior by Bayes' rule (:func:`change_prior`), to another cohort's or to the scored cohort's own,
estimated by EM (:func:`em_prior`, Saerens et al. 2002).

The gradability head's P(gradable) is calibrated apart, by Platt scaling of its logit,
sigmoid(s · logit p + o), fitted on the validation corners that readers graded or called ``NG``
(:func:`fit_gradability`); with no ``NG`` among them it stays as trained. A calibrated probability
is not yet a decision: grading a corner nobody can see costs more than leaving a visible one
ungraded (:data:`~tfmssass.core.config.HIDDEN_GRADED_COST` times), so the head's threshold is set
where the two expected costs meet (:func:`choose_gradable_threshold`), and kept in the calibration.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import softmax

from tfmssass.core.atomic import write_text
from tfmssass.core.config import GRADABLE_THRESHOLD, HIDDEN_GRADED_COST, PROBABILITY_FLOOR

CALIBRATION = "calibration.json"
UNIFORM = (0.25, 0.25, 0.25, 0.25)
#: Probabilities are clipped here before the logarithm (a float32 softmax can reach exactly 0).


@dataclass(frozen=True)
class Calibration:
    """How a grader's softmax becomes calibrated cohort probabilities. The identity by default
    (an uncalibrated run, whose probabilities are taken to assume every grade equally common)."""

    temperature: float = 1.0
    bias: tuple = (0.0, 0.0, 0.0, 0.0)  # added to the logits after the temperature
    prior: tuple = UNIFORM  # the grade frequencies the calibrated probabilities assume (the training cohort's)
    fitted: bool = False
    validation: dict = field(default_factory=dict)  # corners, NLL and ECE before/after, the Bayes shift
    gradable: tuple = (1.0, 0.0)  # Platt scaling of P(gradable): slope and offset of its logit
    gradable_threshold: float = GRADABLE_THRESHOLD  # calibrated P(gradable) under this → not gradable

    def to_dict(self) -> dict:
        return {**asdict(self), "bias": list(self.bias), "prior": list(self.prior), "gradable": list(self.gradable)}

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        return cls(float(data["temperature"]), tuple(map(float, data["bias"])), tuple(map(float, data["prior"])),
                   bool(data.get("fitted", True)), dict(data.get("validation", {})),
                   tuple(map(float, data.get("gradable", (1.0, 0.0)))),
                   float(data.get("gradable_threshold", GRADABLE_THRESHOLD)))


def read_calibration(run_dir) -> Calibration:
    """A grader run's calibration; the identity for a run that has none (trained before it existed)."""
    path = Path(run_dir) / CALIBRATION
    return Calibration.from_dict(json.loads(path.read_text())) if path.is_file() else Calibration()


def write_calibration(run_dir, calibration: Calibration) -> Path:
    path = Path(run_dir) / CALIBRATION
    write_text(path, json.dumps(calibration.to_dict(), indent=1) + "\n")
    return path


def frequencies(counts: dict) -> tuple:
    """Grade frequencies from counts {grade: n}, with one pseudo-count each (a grade never seen in
    training is rare, not impossible: its log must stay finite)."""
    n = np.array([counts.get(g, 0) for g in range(4)], float) + 1.0
    return tuple(float(v) for v in n / n.sum())


def balanced_prior(counts: dict) -> tuple:
    """What balanced epochs teach: the grades present in training, equally often."""
    present = np.array([counts.get(g, 0) > 0 for g in range(4)], float)
    present = np.where(present.any(), present, 1.0)
    mixed = 0.999 * present / present.sum() + 0.001 / 4  # a grade absent from training stays possible
    return tuple(float(v) for v in mixed)


def _log(probabilities) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, np.float64), PROBABILITY_FLOOR, 1.0))


def calibrate(probabilities, calibration: Calibration) -> np.ndarray:
    """The grader's raw softmax [..., 4] → calibrated probabilities under ``calibration.prior``.
    (In a graph: :func:`calibrate_in_graph`.)"""
    return softmax(_log(probabilities) / calibration.temperature + np.asarray(calibration.bias), axis=-1)


def calibrate_in_graph(probabilities, gradable, calibration: Calibration, prior=None) -> tuple:
    """:func:`calibrate` and :func:`calibrate_gradable` as ``keras.ops`` (the SavedModel and an
    ensemble's members apply them in their graphs), the grades moved by Bayes' rule to ``prior``
    (None: kept under ``calibration.prior``)."""
    from keras import ops

    shift = np.asarray(calibration.bias, np.float32)
    if prior is not None:
        shift = shift + np.log(np.asarray(prior, np.float32)) - np.log(np.asarray(calibration.prior, np.float32))
    grades = ops.softmax(ops.log(ops.maximum(probabilities, PROBABILITY_FLOOR)) / calibration.temperature + shift)
    gradable = ops.clip(gradable, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    slope, offset = calibration.gradable
    return grades, ops.sigmoid(slope * (ops.log(gradable) - ops.log1p(-gradable)) + offset)


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return np.log(p) - np.log1p(-p)


def calibrate_gradable(p_gradable, calibration: Calibration) -> np.ndarray:
    """The head's raw P(gradable) → calibrated (the SavedModel does the same in-graph)."""
    slope, offset = calibration.gradable
    return 1.0 / (1.0 + np.exp(-(slope * _logit(p_gradable) + offset)))


def fit_gradability(p_gradable, gradable) -> tuple[tuple, dict]:
    """Platt scaling (slope, offset) of P(gradable) on corners whose truth is known (``gradable``: true
    for a graded corner, false for a reader's NG), and what it did; the identity without both kinds."""
    from scipy.optimize import minimize

    truth = np.asarray(gradable, bool)
    report = {"corners": int(len(truth)), "not_gradable": int((~truth).sum())}
    if truth.all() or not truth.any():
        return (1.0, 0.0), {**report, "fitted": False}

    def nll(x):
        q = np.clip(calibrate_gradable(p_gradable, Calibration(gradable=tuple(x))), PROBABILITY_FLOOR,
                    1 - PROBABILITY_FLOOR)
        return float(-np.mean(np.where(truth, np.log(q), np.log1p(-q))))

    result = minimize(nll, np.array([1.0, 0.0]), method="L-BFGS-B", bounds=[(0.05, 20.0), (-20.0, 20.0)])
    slope, offset = (float(v) for v in result.x)
    return (slope, offset), {**report, "fitted": True, "nll_before": nll(np.array([1.0, 0.0])),
                             "nll_after": float(result.fun)}


def choose_gradable_threshold(p_gradable, gradable, cost: float = HIDDEN_GRADED_COST) -> tuple[float, dict]:
    """The gradable threshold of a calibrated head, and what it does on the calibration corners
    (``p_gradable`` calibrated, ``gradable`` false for the ``NG`` ones): grade a corner when the
    expected cost of grading it, (1 - p) · ``cost``, is below that of not grading it, p: p ≥ cost / (1 + cost).
    0.5 when there are no ``NG`` corners (the head was not calibrated: nothing to decide on)."""
    p, truth = np.asarray(p_gradable, np.float64), np.asarray(gradable, bool)
    if truth.all() or not truth.any():
        return GRADABLE_THRESHOLD, {"hidden_graded_cost": cost, "not_gradable_corners": int((~truth).sum())}
    threshold = cost / (1.0 + cost)
    graded = p >= threshold
    return threshold, {"hidden_graded_cost": cost, "not_gradable_corners": int((~truth).sum()),
                       "not_gradable_graded": float(graded[~truth].mean()),
                       "gradable_called_not_gradable": float((~graded[truth]).mean())}


def uncalibrate(probabilities, calibration: Calibration) -> np.ndarray:
    """The inverse of :func:`calibrate`: the grader's raw softmax back (to measure calibration before)."""
    return softmax((_log(probabilities) - np.asarray(calibration.bias)) * calibration.temperature, axis=-1)


def change_prior(probabilities, from_prior, to_prior) -> np.ndarray:
    """Bayes' rule: posteriors under ``from_prior`` → posteriors under ``to_prior`` (rows [..., 4])."""
    p = np.asarray(probabilities, np.float64) * (np.asarray(to_prior, float) / np.asarray(from_prior, float))
    return p / p.sum(axis=-1, keepdims=True)


def em_prior(probabilities, from_prior, iterations: int = 200, tolerance: float = 1e-7) -> tuple:
    """The grade frequencies of the cohort that ``probabilities`` [N, 4] were computed on, by EM
    (Saerens, Latinne & Decaestecker 2002): re-weight the posteriors to a guessed prior, take their
    mean as the next guess, until it settles. ``from_prior`` is the prior the posteriors assume."""
    p = np.asarray(probabilities, np.float64)
    if len(p) == 0:
        return tuple(map(float, from_prior))
    prior = np.asarray(from_prior, float)
    for _ in range(iterations):
        nxt = change_prior(p, from_prior, prior).mean(axis=0)
        nxt = np.maximum(nxt, PROBABILITY_FLOOR)
        nxt /= nxt.sum()
        if np.abs(nxt - prior).max() < tolerance:
            prior = nxt
            break
        prior = nxt
    return tuple(float(v) for v in prior)


def negative_log_likelihood(probabilities, grades) -> float:
    return float(-_log(probabilities)[np.arange(len(grades)), np.asarray(grades, int)].mean())


def fit_scaling(probabilities, grades, shift=np.zeros(4)) -> tuple[float, float]:
    """(T, a) minimising the NLL of softmax(log p / T + a · shift) over the given corners: T within
    [1/20, 20], a (how much of the Bayes shift the corners support) within [0, 1]. Two numbers, so
    a few hundred corners fit them; free per-grade offsets chase a handful of confident errors."""
    from scipy.optimize import minimize

    log_p = _log(probabilities)
    grades = np.asarray(grades, int)
    shift = np.asarray(shift, float)

    def nll(x):
        return negative_log_likelihood(softmax(log_p / np.exp(x[0]) + x[1] * shift, axis=-1), grades)

    result = minimize(nll, np.array([0.0, 1.0 if shift.any() else 0.0]), method="L-BFGS-B",
                      bounds=[(np.log(0.05), np.log(20.0)), (0.0, 1.0)])
    return float(np.exp(result.x[0])), float(result.x[1])


def reliability(probabilities, grades, bins: int = 15) -> list[dict]:
    """Top-label reliability: per confidence bin, how many corners, their mean confidence and how
    often the most probable grade was right."""
    p = np.asarray(probabilities, np.float64)
    confidence, predicted = p.max(axis=1), p.argmax(axis=1)
    correct = predicted == np.asarray(grades, int)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "corners": int(inside.sum()),
                     "confidence": float(confidence[inside].mean()) if inside.any() else float("nan"),
                     "accuracy": float(correct[inside].mean()) if inside.any() else float("nan")})
    return rows


def expected_calibration_error(probabilities, grades, bins: int = 15) -> float:
    """Top-label ECE: the corner-weighted mean gap between confidence and accuracy over the bins."""
    rows = [r for r in reliability(probabilities, grades, bins) if r["corners"]]
    total = sum(r["corners"] for r in rows)
    if not total:
        return float("nan")
    return float(sum(r["corners"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / total)


def fit_calibration(probabilities, grades, train_counts: dict) -> Calibration:
    """Calibration of a grader from its raw softmax on corners of the training cohort (with their
    true grades) and its training grade counts: T, and b = a share of the Bayes shift."""
    prior = frequencies(train_counts)
    bayes = np.log(prior) - np.log(balanced_prior(train_counts))
    temperature, share = fit_scaling(probabilities, grades, bayes)
    bias = tuple(float(share * v) for v in bayes)
    after = calibrate(probabilities, Calibration(temperature, bias, prior))
    bayes_only = calibrate(probabilities, Calibration(1.0, tuple(bayes), prior))
    validation = {"corners": int(len(grades)), "bayes_shift": [float(v) for v in bayes], "share_of_bayes_shift": share,
                  "nll_before": negative_log_likelihood(probabilities, grades),
                  "nll_after": negative_log_likelihood(after, grades),
                  "ece_before": expected_calibration_error(probabilities, grades),
                  "ece_bayes_shift_only": expected_calibration_error(bayes_only, grades),
                  "ece_after": expected_calibration_error(after, grades)}
    return Calibration(temperature, bias, prior, True, validation)


def plot_reliability(curves: dict[str, tuple], path) -> None:
    """A reliability diagram: per named set of (probabilities, grades), accuracy against confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfmssass.core.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect calibration")
    for name, (probabilities, grades) in curves.items():
        rows = [r for r in reliability(probabilities, grades) if r["corners"]]
        ece = expected_calibration_error(probabilities, grades)
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", ms=3,
                label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("confidence of the most probable grade")
    ax.set_ylabel("fraction graded right")
    ax.set_title("Reliability of corner grade probabilities")
    ax.legend(loc="upper left", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
