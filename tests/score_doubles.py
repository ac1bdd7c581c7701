"""Stand-ins for the trained stages, so the scoring run's bookkeeping can be tested without
hours of training: stage 1 answers with the phantoms' labelled points (found by image content),
stage 2 is a tiny untrained grader with fixed weights. Run as a script, it scores a folder
(used by the kill-and-resume test, which needs a process it can SIGKILL).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from tfmssass import anatomy
from tfmssass.detector import Detection
from tfmssass.io import read_radiograph
from tfmssass.io.labels import load_labels, resolve_image
from tfmssass.models.heatmaps import VIEW_SLICES


def _image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class LabelledPoints:
    """Stage 1 double: the labelled points of a known phantom, confidence 0.9; unknown → not found."""

    threshold = 0.3

    def __init__(self, labels_csv):
        frame, _ = load_labels(labels_csv, check_images=False)
        self.table = {}
        for _, row in frame.iterrows():
            image = read_radiograph(resolve_image(frame, row)).image
            points = np.full((24, 2), np.nan, np.float32)
            span = VIEW_SLICES[row["view"]]
            cols = [c for level in anatomy.LEVELS[row["view"]] for c in anatomy.keypoint_columns(level)]
            points[span] = np.asarray([row[c] for c in cols], np.float32).reshape(12, 2)
            confidence = np.where(np.isfinite(points[:, 0]), 0.9, 0.0).astype(np.float32)
            self.table[_image_key(image)] = Detection(points, confidence, row["view"], True)

    def detect(self, image, view=None):
        found = self.table.get(_image_key(image))
        if found is None:
            return Detection(np.full((24, 2), np.nan, np.float32), np.zeros(24, np.float32), view or "lumbar",
                             False, "spine not found: no response")
        return found


def scoring_models(labels_csv):
    import keras

    from tfmssass.models.grader import CornerGrader
    from tfmssass.scorers import ScoringModels

    keras.utils.set_random_seed(0)
    grader = CornerGrader("tiny", 64)
    return ScoringModels(LabelledPoints(labels_csv), grader, input_size=64, extent=2.8, patch_depth_px=48,
                         clahe=True, clahe_clip=2.0, point_threshold=0.3)


def settings(**overrides):
    from tfmssass.scorers import Settings

    return Settings(models="test doubles", phantom=True, **overrides)


if __name__ == "__main__":  # python score_doubles.py PHANTOMS OUT [--resume]
    from tfmssass.score import run_scoring

    phantoms, out = Path(sys.argv[1]), Path(sys.argv[2])
    counts = run_scoring(phantoms, out, scoring_models(phantoms / "labels.csv"), settings(), batch_size=8,
                         resume="--resume" in sys.argv, progress=False, lookahead=1)
    print(counts)
