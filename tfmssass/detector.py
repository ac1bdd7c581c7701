"""Stage-1 inference, coarse to fine (the paper's Figure 1a/b).

Pass 1 sees the whole radiograph and finds the points roughly; which 12 respond tells the view.
Their box plus a margin is the spine region. Pass 2 sees that region at the model's input size,
and its points are mapped back to original pixels. A radiograph where too few points are
confident in pass 1 is reported as "spine not found", not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from .augment import apply_matrix, invert_matrix, region_matrix, warp
from .data.cache import DEFAULT_LONG_SIDE, shrink_to_long_side
from .models.heatmaps import VIEW_SLICES, decode, heatmap_to_input, view_from_confidence


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
    def __init__(self, model, input_size=(256, 192), long_side: int = DEFAULT_LONG_SIDE,
                 confidence_threshold: float = 0.3, min_points: int = 8, margin: float = 0.2,
                 flip_test: bool = False):
        self.model, self.input_size, self.long_side = model, tuple(input_size), long_side
        self.threshold, self.min_points, self.margin = confidence_threshold, min_points, margin
        self.flip_test = flip_test

    def _heatmaps(self, batch: np.ndarray) -> np.ndarray:
        out = np.asarray(self.model(batch, training=False), dtype=np.float32)
        if self.flip_test:
            # A lateral view has no left/right point pairs: the flipped heatmaps only mirror back.
            flipped = np.asarray(self.model(batch[:, :, ::-1], training=False), dtype=np.float32)
            out = (out + flipped[:, :, ::-1]) / 2.0
        return out

    def _pass(self, image, box):
        matrix = region_matrix(box, self.input_size)
        x = warp(image, matrix, self.input_size).numpy()
        heatmaps = self._heatmaps(x[None, :, :, None])[0]
        points, confidence = decode(heatmaps)
        back = apply_matrix(invert_matrix(matrix), heatmap_to_input(points)).numpy()
        return back, confidence

    def detect(self, image: np.ndarray, view: str | None = None) -> Detection:
        """``image`` is the display image [H, W] in [0, 1]; ``view`` forces the view if known."""
        small, sx, sy = shrink_to_long_side(np.asarray(image, np.float32), self.long_side)
        height, width = small.shape
        whole = np.array([-0.5, -0.5, width - 0.5, height - 0.5], np.float32)
        coarse, conf1 = self._pass(small, whole)
        view = view or view_from_confidence(conf1)
        span = VIEW_SLICES[view]
        confident = conf1[span] >= self.threshold
        nan = np.full((24, 2), np.nan, np.float32)
        if confident.sum() < self.min_points:
            return Detection(nan, conf1, view, False,
                             f"spine not found: {int(confident.sum())} of 12 {view} points confident")
        pts = coarse[span][confident]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        # at least 1/8 of the radiograph, so clustered coarse points cannot zoom in absurdly
        size = np.maximum(hi - lo, max(height, width) / 8.0)
        centre = (lo + hi) / 2.0
        half = size * (0.5 + self.margin)
        box = np.concatenate([centre - half, centre + half]).astype(np.float32)
        fine, conf2 = self._pass(small, box)
        points = nan.copy()
        points[span] = fine[span]
        # cache px → original px (pixel-centre aligned)
        points[:, 0] = (points[:, 0] + 0.5) / sx - 0.5
        points[:, 1] = (points[:, 1] + 0.5) / sy - 0.5
        region = np.array([(box[0] + 0.5) / sx - 0.5, (box[1] + 0.5) / sy - 0.5,
                           (box[2] + 0.5) / sx - 0.5, (box[3] + 0.5) / sy - 0.5], np.float32)
        low = np.zeros(24, bool)
        low[span] = conf2[span] < self.threshold
        return Detection(points, conf2, view, True, "", region, low)
