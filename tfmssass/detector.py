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

import cv2
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

    def _look(self, image, box):
        """Heatmaps of ``box`` fitted into the model input, and the image→input matrix used."""
        matrix = region_matrix(box, self.input_size)
        x = warp(image, matrix, self.input_size).numpy()
        return self._heatmaps(x[None, :, :, None])[0], matrix

    def _pass(self, image, box):
        heatmaps, matrix = self._look(image, box)
        points, confidence = decode(heatmaps)
        back = apply_matrix(invert_matrix(matrix), heatmap_to_input(points)).numpy()
        return back, confidence

    def _spine_box(self, heatmaps: np.ndarray, view: str, matrix) -> np.ndarray | None:
        """Box (x0, y0, x1, y1) in image pixels of the strongest connected response of a view."""
        summed = np.clip(heatmaps[..., VIEW_SLICES[view]], 0, None).sum(axis=-1)
        peak = float(summed.max())
        if peak <= 1e-3:
            return None
        mask = (summed >= 0.2 * peak).astype(np.uint8)
        count, labels = cv2.connectedComponents(mask, connectivity=8)
        masses = [summed[labels == k].sum() for k in range(1, count)]
        best = 1 + int(np.argmax(masses))
        ys, xs = np.nonzero(labels == best)
        corners = np.array([[xs.min() - 0.5, ys.min() - 0.5], [xs.max() + 0.5, ys.max() + 0.5]], np.float32)
        return apply_matrix(invert_matrix(matrix), heatmap_to_input(corners)).numpy().reshape(-1)

    def detect(self, image: np.ndarray, view: str | None = None) -> Detection:
        """``image`` is the display image [H, W] in [0, 1]; ``view`` forces the view if known."""
        small, sx, sy = shrink_to_long_side(np.asarray(image, np.float32), self.long_side)
        height, width = small.shape
        whole = np.array([-0.5, -0.5, width - 0.5, height - 0.5], np.float32)
        coarse, matrix = self._look(small, whole)
        _, conf1 = decode(coarse)
        view = view or view_from_confidence(conf1)
        span = VIEW_SLICES[view]
        nan = np.full((24, 2), np.nan, np.float32)
        rough = self._spine_box(coarse, view, matrix)
        if rough is None:
            return Detection(nan, conf1, view, False, "spine not found: no response")
        lo, hi = rough[:2], rough[2:]
        # at least 1/8 of the radiograph, so a small response cannot zoom in absurdly
        size = np.maximum(hi - lo, max(height, width) / 8.0)
        centre = (lo + hi) / 2.0
        half = size * (0.5 + self.margin)
        box = np.concatenate([centre - half, centre + half]).astype(np.float32)
        fine, conf2 = self._pass(small, box)
        confident = conf2[span] >= self.threshold
        if confident.sum() < self.min_points:
            return Detection(nan, conf2, view, False,
                             f"spine not found: {int(confident.sum())} of 12 {view} points confident")
        scale = np.array([sx, sy], np.float32)
        to_original = lambda p: (p + 0.5) / scale - 0.5  # noqa: E731 - working px → original px
        points = nan.copy()
        points[span] = to_original(fine[span])
        region = to_original(box.reshape(2, 2)).reshape(-1).astype(np.float32)
        low = np.zeros(24, bool)
        low[span] = ~confident
        return Detection(points, conf2, view, True, "", region, low)
