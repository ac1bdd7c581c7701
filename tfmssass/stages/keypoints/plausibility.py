"""Is the chain stage 1 found a lateral spine? A gate between detection and grading.

Stage 1 finds twelve points on almost anything bright and elongated. Before a grade is attached to
a corner, the chain must look like the training films' chains, measured in the upright film:

- ``direction``: the first-to-last disk centre line, degrees from straight down (0) — a spine runs
  head to feet;
- ``order``: per step between neighbouring levels, the cosine of the step against that line — every
  level lies further down the spine than the one above;
- ``log_ratio``: per pair of neighbouring steps, the log of the lower step's length over the
  upper's — disk spacing changes slowly along a spine (a point on the wrong vertebra breaks it);
- ``anterior_angle``: per level, degrees between the centre→anterior vector and the perpendicular
  to the spine there (its neighbours' line) on the side most levels point to — all anterior points
  lie on one side, across the spine;
- ``anterior_length``: per level, that vector's length over the mean step — half a disk's depth.

The limits are the training labels' own range per view and position, widened on each side by a
quarter of that range and at least by an allowance for stage 1's point error (:data:`FLOOR`;
:func:`measure_limits`, kept in the stage-1 run as ``plausibility.json``).
A film whose direction or order fails, or with two or more implausible levels, is refused; a
single implausible level is left blank, and with it the levels past it towards the nearer end of the
chain (:func:`beyond_a_break`). Only levels whose two points are confident take part.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmssass.core import anatomy
from tfmssass.core.atomic import write_text
from tfmssass.data.tfrecords import RADIOGRAPHS, parse_radiograph_points, read_records

LIMITS = "plausibility.json"
#: Share of the training range added below and above it, and at least this much per feature: the
#: labels are exact, stage 1's points are not. The floors are how far the demo's stage-1 points on
#: upright tuning phantoms (seed 230, 120 films; never the held-out ones) fall outside the labels'
#: range: about the 99th percentile per film, the 97th for the anterior length (bench/gate_floors.py).
WIDEN = 0.25
FLOOR = {"direction": 10.0, "order": 0.06, "log_ratio": 0.45, "anterior_angle": 32.0, "anterior_length": 0.3}
#: Features and their number of positions along a view's chain of 6 levels.
FEATURES = {"direction": 1, "order": 5, "log_ratio": 4, "anterior_angle": 6, "anterior_length": 6}
#: Features limited on one side only: a step more in line with the spine, or an anterior point more
#: squarely in front of its centre, is never implausible.
LOW_ONLY, HIGH_ONLY = ("order",), ("anterior_angle",)
#: Refusal codes of :func:`check_chain`, after stage 1's own (see ``detect``).
PLAUSIBLE, WRONG_DIRECTION, OUT_OF_ORDER, LEVELS_IMPLAUSIBLE = 0, 1, 2, 3
#: A limit that lets everything through (JSON has no infinity).
OPEN = 1e9


def chain_features(points, valid):
    """Features (see the module docstring) of one view's points [12, 2] (centre, anterior per level),
    with ``valid`` [6] the levels taking part; each feature's values and whether each was measured."""
    points = tf.convert_to_tensor(points, tf.float32)
    valid = tf.convert_to_tensor(valid, tf.bool)
    centres, anterior = points[0::2], points[1::2] - points[0::2]
    index = tf.cast(tf.where(valid)[:, 0], tf.int32)
    enough = tf.size(index) >= 2
    first = tf.gather(centres, tf.reduce_min(tf.concat([index, [5]], 0)))
    last = tf.gather(centres, tf.reduce_max(tf.concat([index, [0]], 0)))
    run = last - first
    axis = run / tf.maximum(tf.norm(run), 1e-6)
    steps = centres[1:] - centres[:-1]
    step_len = tf.maximum(tf.norm(steps, axis=1), 1e-6)
    step_valid = valid[1:] & valid[:-1]
    # the spine's local direction at each level, from its neighbours (the run where it has none)
    up = tf.where(tf.concat([[False], valid[:-1]], 0)[:, None], tf.concat([centres[:1], centres[:-1]], 0), centres)
    down = tf.where(tf.concat([valid[1:], [False]], 0)[:, None], tf.concat([centres[1:], centres[-1:]], 0), centres)
    local = down - up
    local = tf.where((tf.norm(local, axis=1) > 1e-6)[:, None], local, axis[None])
    local = local / tf.maximum(tf.norm(local, axis=1, keepdims=True), 1e-6)
    side = local[:, 0] * anterior[:, 1] - local[:, 1] * anterior[:, 0]  # > 0: anterior to the left
    majority = tf.where(tf.reduce_sum(tf.where(valid, tf.sign(side), 0.0)) >= 0, 1.0, -1.0)
    normal = majority * tf.stack([-local[:, 1], local[:, 0]], axis=1)
    ant_len = tf.maximum(tf.norm(anterior, axis=1), 1e-6)
    mean_step = tf.reduce_sum(tf.where(step_valid, step_len, 0.0)) / tf.maximum(
        tf.reduce_sum(tf.cast(step_valid, tf.float32)), 1.0)
    cosine = tf.clip_by_value(tf.reduce_sum(anterior * normal, axis=1) / ant_len, -1.0, 1.0)
    values = {
        "direction": tf.math.atan2(axis[0], axis[1])[None] * (180.0 / np.pi),
        "order": tf.linalg.matvec(steps, axis) / step_len,
        "log_ratio": tf.math.log(step_len[1:] / step_len[:-1]),
        "anterior_angle": tf.acos(cosine) * (180.0 / np.pi),
        "anterior_length": ant_len / tf.maximum(mean_step, 1e-6),
    }
    measured = {
        "direction": enough[None],
        "order": step_valid & enough,
        "log_ratio": step_valid[1:] & step_valid[:-1],
        "anterior_angle": valid & enough,
        "anterior_length": valid & tf.reduce_any(step_valid),
    }
    return values, measured


def check_chain(points, valid, limits):
    """(code, plausible [6]) for one view's upright points [12, 2]; ``limits`` maps each feature to
    [positions, 2] (low, high) tensors of the film's view."""
    values, measured = chain_features(points, valid)
    bad = {k: measured[k] & ((values[k] < limits[k][:, 0]) | (values[k] > limits[k][:, 1])) for k in FEATURES}
    ratio_bad = tf.pad(bad["log_ratio"], [[1, 1]])  # a ratio of two steps speaks about their shared level
    level_bad = bad["anterior_angle"] | bad["anterior_length"] | ratio_bad
    code = tf.where(tf.reduce_any(bad["direction"]), WRONG_DIRECTION,
                    tf.where(tf.reduce_any(bad["order"]), OUT_OF_ORDER,
                             tf.where(tf.reduce_sum(tf.cast(level_bad, tf.int32)) >= 2, LEVELS_IMPLAUSIBLE,
                                      PLAUSIBLE)))
    return code, ~(level_bad | beyond_a_break(level_bad, valid))


def beyond_a_break(level_bad, valid):
    """[6] the levels past a single implausible one, on the side of the chain with fewer levels: their
    names were counted past a point out of place (under dense shoulders stage 1 can put the last levels
    a disk off, and only the first of them looks odd), so they are left blank with it. A tie leaves
    both sides."""
    level_bad, valid = tf.convert_to_tensor(level_bad, tf.bool), tf.convert_to_tensor(valid, tf.bool)
    index = tf.range(6)
    at = tf.argmax(tf.cast(level_bad, tf.int32), output_type=tf.int32)
    above, below = valid & (index < at), valid & (index > at)
    n_above, n_below = tf.reduce_sum(tf.cast(above, tf.int32)), tf.reduce_sum(tf.cast(below, tf.int32))
    single = tf.equal(tf.reduce_sum(tf.cast(level_bad & valid, tf.int32)), 1)
    return single & tf.where(n_above < n_below, above, tf.where(n_below < n_above, below, tf.zeros([6], tf.bool)))


def measure_limits(points: np.ndarray, views: list[str]) -> dict:
    """Limits per view and feature from labelled upright films: ``points`` [N, 24, 2] (NaN where not
    labelled), ``views`` [N]. The range of each position, widened by :data:`WIDEN` on both sides."""
    limits = {}
    for view in anatomy.VIEWS:
        span = anatomy.VIEW_SLICES[view]
        collected = {k: [] for k in FEATURES}
        for p, v in zip(points, views):
            if v != view:
                continue
            p = np.asarray(p[span], np.float32)
            valid = np.all(np.isfinite(p.reshape(6, 2, 2)), axis=(1, 2))
            if valid.sum() < 3:
                continue
            values, measured = chain_features(np.nan_to_num(p), valid)
            for k in FEATURES:
                collected[k].append(np.where(measured[k].numpy(), values[k].numpy(), np.nan))
        if not collected["order"]:
            continue
        view_limits = {}
        for k, rows in collected.items():
            rows = np.stack(rows).astype(np.float64)
            lo, hi = np.nanmin(rows, axis=0), np.nanmax(rows, axis=0)
            unseen = ~np.isfinite(lo)  # a position never measured lets everything through
            lo, hi = np.where(unseen, -OPEN, lo), np.where(unseen, OPEN, hi)
            pad = np.where(unseen, 0.0, np.maximum(WIDEN * (hi - lo), FLOOR[k]))
            lo, hi = lo - pad, hi + pad
            if k in LOW_ONLY:
                hi = np.full_like(hi, OPEN)
            if k in HIGH_ONLY:
                lo = np.full_like(lo, -OPEN)
            # four decimals, rounded outwards: a training chain never fails its own limits
            view_limits[k] = np.stack([np.floor(lo * 1e4) / 1e4, np.ceil(hi * 1e4) / 1e4], axis=1).tolist()
        view_limits["films"] = int(len(collected["order"]))
        limits[view] = view_limits
    return limits


def limits_from_data(data_dir) -> dict:
    """:func:`measure_limits` over the training split of a prepared folder (points in its pixels:
    every feature is a ratio or an angle, so the scale does not matter)."""
    points, views = [], []
    for serialized in read_records(data_dir, RADIOGRAPHS, "train", repeat=False):
        level_points, view = parse_radiograph_points(serialized)  # no image decoded
        points.append(level_points.numpy())
        views.append(view.numpy().decode())
    return measure_limits(np.stack(points), views)


def write_limits(run_dir, limits: dict) -> None:
    write_text(Path(run_dir) / LIMITS, json.dumps(limits, indent=1) + "\n")


def read_limits(run_dir) -> dict | None:
    """A stage-1 run's limits, or None for a run made before the gate."""
    path = Path(run_dir) / LIMITS
    return json.loads(path.read_text()) if path.is_file() else None


def limit_tensors(limits: dict) -> dict:
    """{feature: [2 views, positions, 2]} for the graph; a view without limits lets everything through."""
    out = {}
    for k, n in FEATURES.items():
        open_ = [[-OPEN, OPEN]] * n
        out[k] = tf.constant([limits.get(view, {}).get(k, open_) for view in anatomy.VIEWS], tf.float32)
    return out
