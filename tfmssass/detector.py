"""Stage-1 inference, coarse to fine (the paper's Figure 1a/b).

Pass 1 sees the whole radiograph. There the 12 points of a view lie so close together that their
peaks merge, so pass 1 does not trust single points. It sums the view's heatmaps and keeps the
region that carries most of the response mass: a stray response, say to a burned-in side marker,
cannot win against a whole spine. Which set of 12 responds more tells the view. The region's box
plus a margin is the spine region. Pass 2 sees that region at the model's input size, finds
every point, and maps it back to original pixels. A radiograph with too few confident points in
pass 2 is reported as "spine not found", not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from .data.cache import DEFAULT_LONG_SIDE
from .models.heatmaps import VIEW_SLICES
from .pipeline import NO_RESPONSE, VIEWS, Stage1


@dataclass
class Detection:
    """Points [24, 2] in original pixels (NaN for the other view), confidence [24], view."""

    points: np.ndarray
    confidence: np.ndarray
    view: str | None
    found: bool
    reason: str = ""
    region: np.ndarray | None = None  # fine-pass box in original pixels
    low_confidence: np.ndarray = field(default_factory=lambda: np.zeros(24, bool))


class KeypointDetector:
    """Stage-1 inference on one radiograph; the work is :class:`tfmssass.pipeline.Stage1`, the
    same TF code the exported SavedModel runs."""

    def __init__(self, model, input_size=(256, 192), long_side: int = DEFAULT_LONG_SIDE,
                 confidence_threshold: float = 0.3, min_points: int = 8, margin: float = 0.2,
                 flip_test: bool = False):
        self.model, self.input_size, self.long_side = model, tuple(input_size), long_side
        self.threshold, self.min_points = confidence_threshold, min_points
        self.stage1 = Stage1(model, input_size, long_side, confidence_threshold, min_points, margin, flip_test)
        self._detect = tf.function(self.stage1.detect, input_signature=[
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([], tf.int32)], autograph=False)

    def detect(self, image: np.ndarray, view: str | None = None) -> Detection:
        """``image`` is the display image [H, W] in [0, 1]; ``view`` forces the view if known."""
        hint = -1 if view is None else VIEWS.index(view)
        points, confidence, view_index, reason, confident, region = (
            t.numpy() for t in self._detect(tf.convert_to_tensor(image, tf.float32), tf.constant(hint)))
        view = VIEWS[int(view_index)]
        if int(reason) == NO_RESPONSE:
            return Detection(points, confidence, view, False, "spine not found: no response")
        if int(reason) != 0:
            return Detection(points, confidence, view, False,
                             f"spine not found: {int(confident)} of 12 {view} points confident")
        low = np.zeros(24, bool)
        span = VIEW_SLICES[view]
        low[span] = confidence[span] < self.threshold
        return Detection(points, confidence, view, True, "", region.astype(np.float32), low)
