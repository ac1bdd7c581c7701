"""Heatmap targets, the per-point weighted loss, and decoding back to coordinates.

Heatmaps have 1/``STRIDE`` of the input resolution. Coordinates map centre-aligned
(heatmap h = (x + 0.5) / STRIDE - 0.5), so a horizontally flipped input gives an exactly mirrored
heatmap and the flip test needs no one-pixel shift.

One network serves both views: 24 heatmaps, the 12 cervical points then the 12 lumbar ones. For a
cervical radiograph the lumbar heatmaps are trained towards zero, so the view is read off which
set responds (see :mod:`tfmssass.stages.keypoints.detect`). Unlabelled points of the radiograph's own view
have weight 0, so they neither help nor hurt.
"""

from __future__ import annotations

import keras
from keras import ops

STRIDE = 4


def input_to_heatmap(xy):
    return (xy + 0.5) / STRIDE - 0.5


def heatmap_to_input(xy):
    return (xy + 0.5) * STRIDE - 0.5


def gaussian_heatmaps(points, visible, height: int, width: int, sigma: float):
    """Targets [height, width, K] for points [K, 2] in heatmap coordinates (TF or NumPy tensors).

    ``visible`` [K] in {0, 1}: a point that is not visible gets an all-zero heatmap.
    """
    xs = ops.reshape(ops.arange(width, dtype="float32"), (1, width, 1))
    ys = ops.reshape(ops.arange(height, dtype="float32"), (height, 1, 1))
    px = ops.reshape(ops.cast(points[:, 0], "float32"), (1, 1, -1))
    py = ops.reshape(ops.cast(points[:, 1], "float32"), (1, 1, -1))
    px = ops.where(ops.isfinite(px), px, -1e4)
    py = ops.where(ops.isfinite(py), py, -1e4)
    d2 = (xs - px) ** 2 + (ys - py) ** 2
    return ops.exp(-d2 / (2.0 * sigma**2)) * ops.reshape(ops.cast(visible, "float32"), (1, 1, -1))


@keras.saving.register_keras_serializable(package="tfmssass")
class WeightedHeatmapLoss(keras.losses.Loss):
    """Mean squared error per point, weighted: ``y_true`` packs [targets (K), weights (K)].

    Pixels also weigh ``1 + foreground × target``: a heatmap is almost all background, and plain
    MSE first settles on predicting zeros everywhere (trained from scratch, without the paper's
    pose-pretrained start, it stays there for hundreds of steps). Each pixel's optimum is still
    its target; only the balance between peak and background changes, so peaks come sooner.
    """

    def __init__(self, foreground: float = 100.0, name="weighted_heatmap_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.foreground = foreground

    def call(self, y_true, y_pred):
        k = ops.shape(y_pred)[-1]
        target, weight = y_true[..., :k], y_true[..., k:]
        y_pred = ops.cast(y_pred, "float32")
        pixel = weight * (1.0 + self.foreground * target)
        return ops.mean(pixel * ops.square(y_pred - target), axis=(1, 2, 3))

    def get_config(self):
        return {**super().get_config(), "foreground": self.foreground}
