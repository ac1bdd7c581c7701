"""Stand-ins for the trained stages, so the scoring run's bookkeeping can be tested without
hours of training: stage 1 answers with the phantoms' labelled points (found by image content),
stage 2 is a tiny untrained grader with fixed weights that calls every corner gradable. Run as a
script, it scores a folder (used by the kill-and-resume test, which needs a process it can SIGKILL).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from tfmssass.core import anatomy
from tfmssass.core.anatomy import VIEW_SLICES
from tfmssass.io import read_radiograph
from tfmssass.io.labels import load_labels, resolve_image
from tfmssass.stages.grader.model import CornerGrader
from tfmssass.stages.keypoints.detect import FINDINGS, FOUND, NO_RESPONSE, Detection, Stage1Result


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class LabelledPoints:
    """Stage 1 double: the labelled points of a known phantom, confidence 0.9; unknown → not found.

    ``detect`` has :class:`~tfmssass.stages.keypoints.detect.Stage1`'s signature and runs inside
    the scoring module's traced function (through ``tf.py_function``); ``table`` holds the
    :class:`Detection` per image and may be changed by a test before scoring; ``not_lateral`` holds the
    keys (:func:`image_key`) of images the orientation check calls no lateral spine.
    """

    #: Never shrunk: the scoring module hands the film over as stored, so its key finds it.
    long_side = 1 << 30

    def __init__(self, labels_csv):
        frame, _ = load_labels(labels_csv, check_images=False)
        self.table, self.not_lateral = {}, set()
        for _, row in frame.iterrows():
            image = read_radiograph(resolve_image(frame, row)).image
            points = np.full((24, 2), np.nan, np.float32)
            span = VIEW_SLICES[row["view"]]
            cols = [c for level in anatomy.LEVELS[row["view"]] for c in anatomy.keypoint_columns(level)]
            points[span] = np.asarray([row[c] for c in cols], np.float32).reshape(12, 2)
            confidence = np.where(np.isfinite(points[:, 0]), 0.9, 0.0).astype(np.float32)
            self.table[image_key(image)] = Detection(points, confidence, row["view"], True)

    def _lookup(self, image, view_index):
        det = self.table.get(image_key(image.numpy()))
        if det is None:
            view = max(int(view_index), 0)
            return (np.full((24, 2), np.nan, np.float32), np.zeros(24, np.float32), np.int32(view),
                    np.int32(NO_RESPONSE), np.int32(0), np.zeros(4, np.float32), np.ones(6, bool), np.ones(6, bool))
        confident = int((det.confidence[VIEW_SLICES[det.view]] >= 0.3).sum())
        return (det.points, det.confidence, np.int32(anatomy.VIEWS.index(det.view)), np.int32(FOUND),
                np.int32(confident), np.zeros(4, np.float32), np.ones(6, bool), np.ones(6, bool))

    def orient(self, image):
        """No turns (films are read as stored); the images in ``not_lateral`` are called no lateral spine."""
        import tensorflow as tf

        other = tf.py_function(lambda x: image_key(x.numpy()) in self.not_lateral, [image], tf.bool)
        other.set_shape([])
        return tf.constant(-1), tf.constant(True), other

    def detect(self, image, view_index):
        import tensorflow as tf

        out = tf.py_function(self._lookup, [image, view_index],
                             [tf.float32, tf.float32, tf.int32, tf.int32, tf.int32, tf.float32, tf.bool, tf.bool])
        for tensor, shape in zip(out, ([24, 2], [24], [], [], [], [4], [6], [6])):
            tensor.set_shape(shape)
        return Stage1Result(*out)

    def detect_shrunk(self, small, scale, view_index):
        return self.detect(small, view_index)  # never shrunk (long_side)


def scoring_models(labels_csv, batch_size: int = 64, **metadata_items):
    """A predictor over the scoring module with the stage-1 double and an untrained tiny grader."""
    import keras

    from tfmssass.core.geometry import CropSpec
    from tfmssass.serving.module import ScoringModule
    from tfmssass.serving.predictors import ModulePredictor

    keras.utils.set_random_seed(0)
    grader = CornerGrader("tiny", 64)
    head = grader.get_layer("gradable")  # untrained, it would call half the corners not gradable at random:
    head.kernel.assign(np.zeros(head.kernel.shape, np.float32))  # these doubles see every corner
    head.bias.assign(np.full(head.bias.shape, 8.0, np.float32))
    stage1 = LabelledPoints(labels_csv)
    metadata = {"note": "PHANTOM-TRAINED test doubles", "phantom_trained": True,
                "keypoints": {"confidence_threshold": 0.3}, "grader": {"extent": 2.8},
                "findings": {str(code): text for code, text in FINDINGS.items()}, **metadata_items}
    module = ScoringModule(stage1, grader, CropSpec(size=64, depth_px=48), 0.3, metadata)
    predictor = ModulePredictor(module, batch_size)
    predictor.stage1 = stage1  # tests reach the double's table through the predictor
    return predictor


def settings(**overrides):
    from tfmssass.scoring.settings import Settings

    return Settings(models="test doubles", phantom=True, **overrides)


if __name__ == "__main__":  # python score_doubles.py PHANTOMS OUT [--resume]
    from tfmssass.scoring.run import run_scoring

    phantoms, out = Path(sys.argv[1]), Path(sys.argv[2])
    counts = run_scoring(phantoms, out, scoring_models(phantoms / "labels.csv", 8), settings(), batch_size=8,
                         resume="--resume" in sys.argv, progress=False, lookahead=1)
    print(counts)
