"""Stage-1 inference, coarse to fine (the paper's Figure 1a/b).

Pass 1 sees the whole radiograph. There the 12 points of a view lie so close together that their
peaks merge, so pass 1 does not trust single points. It sums the view's heatmaps and keeps the
region that carries most of the response mass: a stray response, say to a burned-in side marker,
cannot win against a whole spine. Which set of 12 responds more tells the view. The region's box
plus a margin is the spine region. Pass 2 sees that region at the model's input size, finds
every point, and maps it back to original pixels. A radiograph with too few confident points in
pass 2 is reported as "spine not found", not guessed.

:meth:`Stage1.orient` (when the run has an orientation classifier, :mod:`.orientation`) tells how
many quarter turns the film was stored from upright; the scoring module turns it back before
detection. After pass 2, levels that the film does not reach are left blank (:mod:`.film_edge`) and
the plausibility gate (:mod:`.plausibility`) checks the rest of the chain: a film that fails is
refused, a single odd level is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfmssass.core import anatomy
from tfmssass.core.config import POINT_CONFIDENCE, SKIPPED
from tfmssass.ops.image import (
    apply_matrix,
    invert_matrix,
    region_matrix,
    shrink_to_long_side,
    warp,
)
from tfmssass.stages.keypoints.film_edge import levels_on_film
from tfmssass.stages.keypoints.heatmaps import heatmap_to_input
from tfmssass.stages.keypoints.orientation import NOT_LATERAL, ORIENTATION_THRESHOLD, thumbnail, with_mirror
from tfmssass.stages.keypoints.plausibility import check_chain, limit_tensors

#: Detection outcome codes (``Stage1Result.finding``): stage 1's own, then the gate's (plausibility
#: codes 1, 2, 3 shifted by ``GATE``), then the view check's. Codes never change meaning: exported
#: models carry them.
FOUND, NO_RESPONSE, TOO_FEW_POINTS, ORIENTATION_UNSURE = 0, 1, 2, 3
GATE = 3
NOT_LATERAL_FILM = 7
#: What each outcome means to a reader ({n}: confident points, {view}: the view).
FINDINGS = {
    FOUND: "",
    NO_RESPONSE: "spine not found: no response",
    TOO_FEW_POINTS: "spine not found: {n} of 12 {view} points confident",
    ORIENTATION_UNSURE: "orientation unsure: the film may be stored turned; check it, or store it upright",
    GATE + 1: "implausible spine: the chain of disks does not run from head to feet",
    GATE + 2: "implausible spine: disk levels out of order along the spine",
    GATE + 3: "implausible spine: two or more levels out of proportion for a lateral {view} spine",
    NOT_LATERAL_FILM: SKIPPED + "not a lateral cervical or lumbar radiograph",
}


def decode_heatmaps(heatmaps):
    """[h, w, K] → (points [K, 2] in heatmap coordinates, peak values [K]).

    Arg-max, then a quarter pixel towards the larger neighbour in x and in y, as in HRNet.
    """
    hm = tf.convert_to_tensor(heatmaps, tf.float32)
    width = tf.shape(hm)[1]
    height = tf.shape(hm)[0]
    flat = tf.reshape(tf.transpose(hm, [2, 0, 1]), [tf.shape(hm)[2], -1])
    index = tf.argmax(flat, axis=1, output_type=tf.int32)
    peak = tf.reduce_max(flat, axis=1)
    y, x = index // width, index % width

    def value(yy, xx):
        yy, xx = tf.clip_by_value(yy, 0, height - 1), tf.clip_by_value(xx, 0, width - 1)
        return tf.gather(flat, yy * width + xx, batch_dims=1)

    inside_x = (x > 0) & (x < width - 1)
    inside_y = (y > 0) & (y < height - 1)
    dx = tf.where(inside_x, tf.sign(value(y, x + 1) - value(y, x - 1)) * 0.25, 0.0)
    dy = tf.where(inside_y, tf.sign(value(y + 1, x) - value(y - 1, x)) * 0.25, 0.0)
    points = tf.stack([tf.cast(x, tf.float32) + dx, tf.cast(y, tf.float32) + dy], axis=-1)
    return points, peak


def strongest_region(summed):
    """Box [x0, y0, x1, y1] (heatmap px edges) of the 8-connected region ≥ 20% of the peak that
    carries the most response mass: a stray response cannot outweigh a whole spine."""
    summed = tf.convert_to_tensor(summed, tf.float32)
    height, width = tf.shape(summed)[0], tf.shape(summed)[1]
    mask = summed >= 0.2 * tf.reduce_max(summed)
    ids = tf.reshape(tf.range(1, height * width + 1, dtype=tf.float32), [height, width])
    labels = tf.where(mask, ids, 0.0)

    def grow(labels, _):
        spread = tf.nn.max_pool2d(labels[None, :, :, None], 3, 1, "SAME")[0, :, :, 0]
        spread = tf.where(mask, spread, 0.0)
        return spread, tf.reduce_any(tf.not_equal(spread, labels))

    labels, _ = tf.while_loop(lambda _, changed: changed, grow, (labels, tf.constant(True)))
    segment = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    mass = tf.math.unsorted_segment_sum(tf.reshape(summed, [-1]), segment, height * width + 1)
    best = tf.cast(tf.argmax(mass[1:], output_type=tf.int32) + 1, tf.float32)
    ys, xs = tf.unstack(tf.cast(tf.where(tf.equal(labels, best)), tf.float32), axis=1)
    return tf.stack([tf.reduce_min(xs) - 0.5, tf.reduce_min(ys) - 0.5,
                     tf.reduce_max(xs) + 0.5, tf.reduce_max(ys) + 0.5])


class Stage1Result(NamedTuple):
    """What one radiograph's detection gives, as tensors."""

    points: object  # [24, 2] original pixels, NaN outside the view or when not found
    confidence: object  # [24] heatmap peaks (fine pass; coarse pass when nothing responded)
    view: object  # int32: 0 cervical, 1 lumbar
    finding: object  # outcome code (FINDINGS)
    confident: object  # confident points of the view
    region: object  # [4] the fine-pass box in original pixels
    level_plausible: object  # [6] bool: the view's levels the plausibility gate lets through
    on_film: object  # [6] bool: the view's levels on the film (points NaN for the others)


class Stage1:
    """Coarse-to-fine detection in TF ops: the graph that scoring and the SavedModel run."""

    def __init__(self, model, input_size=(256, 192), long_side: int = 1024,
                 confidence_threshold: float = POINT_CONFIDENCE,
                 min_points: int = 8, margin: float = 0.2, flip_test: bool = False, orientation=None,
                 limits: dict | None = None):
        self.model, self.input_size, self.long_side = model, tuple(int(v) for v in input_size), long_side
        self.confidence_threshold, self.min_points = confidence_threshold, min_points
        self.margin, self.flip_test = margin, flip_test
        self.orientation = orientation  # both optional: runs made before the checks have neither
        self._limits = limit_tensors(limits) if limits is not None else None
        # one traced forward pass, called by both passes (and every exported signature)
        self.forward = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32), autograph=False,
                                   input_signature=[tf.TensorSpec([None, *self.input_size, 1], tf.float32)])

    def heatmaps(self, image, box):
        """Heatmaps [h, w, 24] of ``box`` fitted into the model input, and the image→input matrix."""
        matrix = region_matrix(box, self.input_size)
        x = warp(image, matrix, self.input_size)[None, :, :, None]
        out = self.forward(x)
        if self.flip_test:
            # A lateral view has no left/right point pairs: the flipped heatmaps only mirror back.
            flipped = self.forward(x[:, :, ::-1])
            out = (out + flipped[:, :, ::-1]) / 2.0
        return out[0], matrix

    def detect(self, image, view_index):
        """``image`` [H, W] in [0, 1]; ``view_index`` 0 cervical, 1 lumbar, -1 let the model tell.

        Returns a :class:`Stage1Result`: points [24, 2] in original pixels (NaN outside the view and off
        the film), confidence [24], view index, outcome code, confident point count, the fine-pass box
        and, with the checks (a run with plausibility limits), the levels the gate lets through and those
        on the film.
        """
        return self.detect_shrunk(*shrink_to_long_side(image, self.long_side), view_index)

    def detect_shrunk(self, small, scale, view_index):
        """:meth:`detect` on the film already shrunk to the long side (``scale`` (sx, sy) from the
        original), so a caller that shrank it once (to check its orientation) need not again."""
        height = tf.cast(tf.shape(small)[0], tf.float32)
        width = tf.cast(tf.shape(small)[1], tf.float32)
        whole = tf.stack([-0.5, -0.5, width - 0.5, height - 0.5])
        coarse, matrix = self.heatmaps(small, whole)
        _, conf1 = decode_heatmaps(coarse)
        by_view = tf.reduce_mean(tf.reshape(conf1, [2, 12]), axis=1)
        view = tf.where(view_index >= 0, tf.cast(view_index, tf.int32),
                        tf.argmax(by_view, output_type=tf.int32))
        span = view * 12 + tf.range(12)
        summed = tf.reduce_sum(tf.maximum(tf.gather(coarse, span, axis=2), 0.0), axis=2)
        responded = tf.reduce_max(summed) > 1e-3
        edges = heatmap_to_input(tf.reshape(strongest_region(summed), [2, 2]))
        rough = tf.reshape(apply_matrix(invert_matrix(matrix), edges), [-1])
        rough = tf.where(responded, rough, whole)  # nothing responded: look at everything, then give up
        lo, hi = rough[:2], rough[2:]
        size = tf.maximum(hi - lo, tf.maximum(height, width) / 8.0)  # never zoom in absurdly
        centre = (lo + hi) / 2.0
        half = size * (0.5 + self.margin)
        box = tf.concat([centre - half, centre + half], axis=0)
        fine, fine_matrix = self.heatmaps(small, box)
        points, conf2 = decode_heatmaps(fine)
        back = apply_matrix(invert_matrix(fine_matrix), heatmap_to_input(points))
        view_conf = tf.gather(conf2, span)
        confident = tf.reduce_sum(tf.cast(view_conf >= self.confidence_threshold, tf.int32))
        view_points = tf.gather(back, span)
        level_confident = tf.minimum(view_conf[0::2], view_conf[1::2]) >= self.confidence_threshold
        on_film = (levels_on_film(view_points[0::2], level_confident, height, width) if self._limits is not None
                   else tf.ones([6], tf.bool))
        gate, level_plausible = self.check(view_points, level_confident & on_film, view)
        outcome = tf.where(~responded, NO_RESPONSE,
                           tf.where(confident < self.min_points, TOO_FEW_POINTS,
                                    tf.where(gate > 0, GATE + gate, FOUND)))
        found = tf.equal(outcome, FOUND)
        original = (back + 0.5) / scale - 0.5
        kept = tf.scatter_nd(span[:, None], tf.repeat(on_film, 2), [24])  # the view's points on the film
        points = tf.where(kept[:, None] & found, original, float("nan"))
        region = tf.reshape((tf.reshape(box, [2, 2]) + 0.5) / scale - 0.5, [-1])
        confidence = tf.where(responded, conf2, conf1)
        return Stage1Result(points, confidence, view, outcome, confident, region, level_plausible, on_film)

    def orient(self, small):
        """(quarter turns counter-clockwise the film was stored from upright, whether that is sure,
        whether it is not a lateral spine film at all); (-1, True, False) without a classifier. The
        classifier sees the film as detection would (``small``: shrunk to the long side), and mirrored."""
        if self.orientation is None:
            return tf.constant(-1), tf.constant(True), tf.constant(False)
        seen = thumbnail(small)
        p = tf.cast(self.orientation(tf.stack([seen, seen[:, ::-1]]), training=False), tf.float32)
        classes = p.shape[-1]  # 4, or 5 with the not-lateral class
        p = with_mirror(p[0], p[1])
        turn_p = p[:4]
        not_lateral = tf.equal(tf.argmax(p, output_type=tf.int32), NOT_LATERAL) if classes > 4 else tf.constant(False)
        return (tf.argmax(turn_p, output_type=tf.int32), tf.reduce_max(turn_p) >= ORIENTATION_THRESHOLD,
                not_lateral)

    def check(self, points, valid, view):
        """The gate on the view's 12 upright points, ``valid`` [6] the levels taking part: (code, levels
        let through [6]); all through without limits (a run from before the checks)."""
        if self._limits is None:
            return tf.constant(0), tf.ones([6], tf.bool)
        limits = {k: tf.gather(v, view) for k, v in self._limits.items()}
        return check_chain(points, valid, limits)


def finding(code: int, confident: int, view: str) -> str:
    """The reader's words for an outcome code."""
    return FINDINGS[int(code)].format(n=int(confident), view=view)


@dataclass
class Detection:
    """Points [24, 2] in original pixels (NaN for the other view), confidence [24], view."""

    points: np.ndarray
    confidence: np.ndarray
    view: str | None
    found: bool
    finding: str = ""  # why the spine was not found (empty when it was)
    region: np.ndarray | None = None  # fine-pass box in original pixels
    low_confidence: np.ndarray = field(default_factory=lambda: np.zeros(24, bool))


class KeypointDetector:
    """Stage-1 inference on one radiograph as stored (no orientation classifier, no plausibility gate:
    what evaluates the network); the work is :class:`Stage1`, the same TF code the SavedModel runs."""

    def __init__(self, model, input_size=(256, 192), long_side: int = 1024,
                 confidence_threshold: float = POINT_CONFIDENCE, min_points: int = 8, margin: float = 0.2,
                 flip_test: bool = False):
        self.model, self.input_size, self.long_side = model, tuple(input_size), long_side
        self.confidence_threshold, self.min_points = confidence_threshold, min_points
        self.stage1 = Stage1(model, input_size, long_side, confidence_threshold, min_points, margin, flip_test)
        self._detect = tf.function(self.stage1.detect, input_signature=[
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([], tf.int32)], autograph=False)

    @classmethod
    def from_config(cls, model, config, flip_test: bool = False) -> "KeypointDetector":
        """The detector a stage-1 training configuration (``KeypointConfig``) describes."""
        return cls(model, config.input_size, config.cache_long_side, config.confidence_threshold,
                   config.min_points, flip_test=flip_test)

    def detect(self, image: np.ndarray, view: str | None = None) -> Detection:
        """``image`` is the display image [H, W] in [0, 1]; ``view`` forces the view if known."""
        hint = -1 if view is None else anatomy.VIEWS.index(view)
        result = Stage1Result(*(t.numpy() for t in self._detect(tf.convert_to_tensor(image, tf.float32),
                                                                 tf.constant(hint))))
        view = anatomy.VIEWS[int(result.view)]
        if int(result.finding) != FOUND:
            return Detection(result.points, result.confidence, view, False,
                             finding(result.finding, result.confident, view))
        low = np.zeros(24, bool)
        span = anatomy.VIEW_SLICES[view]
        low[span] = result.confidence[span] < self.confidence_threshold
        return Detection(result.points, result.confidence, view, True, "", result.region.astype(np.float32), low)
