"""``tfmssass export``: both trained stages as one TF SavedModel for TF Serving.

The served graph is :mod:`tfmssass.pipeline` (the functions ``tfmssass score`` runs), wrapped in
signatures, so served and local results agree. Signatures:

- ``serving_default``: ``images`` = a batch of encoded PNG strings (8- or 16-bit grey display
  images, bone bright; REST sends them as ``{"b64": ...}``).
- ``image_tensor``: ``images`` = float32 [B, H, W, 1] in [0, 1], any H and W.
- ``keypoints``: stage 1 alone on float32 [B, H, W, 1]; ``grader``: stage 2 alone on canonical
  corner crops float32 [N, S, S, 1] (already CLAHE-processed if the grader uses it).

Outputs of the whole pipeline: ``keypoints`` [B, 24, 2] (original pixels, NaN outside the view
or when the spine is not found), ``keypoint_confidence`` [B, 24], ``view`` [B] (string),
``spine_found`` [B], ``grade_probabilities`` [B, 12, 4], ``grades`` [B, 12] (-1 = not graded),
``corner_confidence`` [B, 12], ``review`` [B, 12], and ``model_note`` [B] (says so when the
weights are phantom-trained, so a TF Serving client learns it too).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from . import __version__, anatomy
from .config import GraderConfig, KeypointConfig
from .pipeline import VIEWS, Stage1, corner_crops, grade_corners
from .scorers import PHANTOM_WARNING

OUTPUT_NAMES = ("keypoints", "keypoint_confidence", "view", "spine_found", "grade_probabilities", "grades",
                "corner_confidence", "review", "model_note")


class PipelineFunctions:
    """The end-to-end computation for a batch, from the two Keras models and their configs."""

    def __init__(self, keypoint_model, kp: KeypointConfig, grader, gr: GraderConfig, note: str = "",
                 review_threshold: float = 0.6, point_review: float = 0.5):
        self.note = note
        self.stage1 = Stage1(keypoint_model, kp.input_size, kp.cache_long_side, kp.confidence_threshold,
                             kp.min_points)
        self.grader, self.gr, self.threshold = grader, gr, kp.confidence_threshold
        s = gr.input_size
        self.grade = tf.function(lambda x: tf.cast(grader(x, training=False), tf.float32), autograph=False,
                                 input_signature=[tf.TensorSpec([None, s, s, 1], tf.float32)])
        self.review_threshold, self.point_review = review_threshold, point_review

    def _one(self, image):
        points, confidence, view, reason, _, _ = self.stage1.detect(image, tf.constant(-1))
        span = view * 12 + tf.range(12)
        view_points = tf.gather(points, span)
        view_conf = tf.gather(confidence, span)
        level_conf = tf.minimum(view_conf[0::2], view_conf[1::2])
        found = tf.equal(reason, 0)
        gr = self.gr
        crops, ok = corner_crops(image, view_points, (level_conf >= self.threshold) & found, gr.input_size,
                                 gr.extent, gr.patch_depth_px, gr.clahe, gr.clahe_clip)
        return points, confidence, view, found, crops, ok, level_conf

    def _signature(self, gr):
        s = gr.input_size
        return (tf.TensorSpec([24, 2], tf.float32), tf.TensorSpec([24], tf.float32), tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.bool), tf.TensorSpec([12, s, s], tf.float32), tf.TensorSpec([6], tf.bool),
                tf.TensorSpec([6], tf.float32))

    def run(self, images, decode_png: bool):
        def one(x):
            image = (tf.cast(tf.io.decode_png(x, channels=1, dtype=tf.uint16), tf.float32) / 65535.0
                     if decode_png else x)
            return self._one(image[:, :, 0])

        points, confidence, view, found, crops, ok, level_conf = tf.map_fn(
            one, images, fn_output_signature=self._signature(self.gr))
        s = self.gr.input_size
        probabilities = self.grade(tf.reshape(crops, [-1, s, s, 1]))
        probabilities = tf.reshape(probabilities, [-1, 12, 4])
        grades, corner_conf, review = grade_corners(probabilities, level_conf, ok, self.review_threshold,
                                                    self.point_review)
        return {"keypoints": points, "keypoint_confidence": confidence, "view": tf.gather(tf.constant(VIEWS), view),
                "spine_found": found, "grade_probabilities": probabilities, "grades": grades,
                "corner_confidence": corner_conf, "review": review,
                "model_note": tf.fill(tf.shape(found), self.note)}

    def keypoints_only(self, images):
        def one(x):
            points, confidence, view, reason, _, _ = self.stage1.detect(x[:, :, 0], tf.constant(-1))
            return points, confidence, view, tf.equal(reason, 0)

        points, confidence, view, found = tf.map_fn(one, images, fn_output_signature=(
            tf.TensorSpec([24, 2], tf.float32), tf.TensorSpec([24], tf.float32), tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.bool)))
        return {"keypoints": points, "keypoint_confidence": confidence, "view": tf.gather(tf.constant(VIEWS), view),
                "spine_found": found}

    def grader_only(self, crops):
        return {"grade_probabilities": self.grade(crops)}


def export_models(keypoint_model, kp: KeypointConfig, grader, gr: GraderConfig, out, metadata: dict) -> Path:
    """Write the SavedModel (atomically: a temp folder renamed into place) and metadata.json."""
    out = Path(out)
    if not out.name.isdigit():
        raise ValueError(f"{out}: the last folder must be a numeric version (TF Serving layout), e.g. .../1")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: already exists; choose a new version number")
    fns = PipelineFunctions(keypoint_model, kp, grader, gr, metadata.get("note", ""))
    s = gr.input_size
    images = tf.TensorSpec([None, None, None, 1], tf.float32, name="images")
    # A plain tf.Module holding the variables once (keras' ExportArchive stored every weight twice).
    module = tf.Module()
    module.model_variables = [w.value for w in keypoint_model.weights + grader.weights]
    signatures = {
        "serving_default": tf.function(lambda images: fns.run(images, decode_png=True), autograph=False,
                                       input_signature=[tf.TensorSpec([None], tf.string, name="images")]),
        "image_tensor": tf.function(lambda images: fns.run(images, decode_png=False), autograph=False,
                                    input_signature=[images]),
        "keypoints": tf.function(fns.keypoints_only, autograph=False, input_signature=[images]),
        "grader": tf.function(fns.grader_only, autograph=False,
                              input_signature=[tf.TensorSpec([None, s, s, 1], tf.float32, name="crops")]),
    }
    for name, fn in signatures.items():
        setattr(module, name, fn)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tf.saved_model.save(module, str(tmp / "model"), signatures=signatures)
        (tmp / "model" / "metadata.json").write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()
        (tmp / "model").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def build_metadata(kp: KeypointConfig, gr: GraderConfig, keypoints_config: dict, grader_config: dict,
                   phantom: bool) -> dict:
    return {
        "package": "tfmssass", "version": __version__,
        "phantom_trained": phantom,
        "note": PHANTOM_WARNING if phantom else "",
        "classes": {str(k): v for k, v in anatomy.GRADES.items()},
        "views": list(VIEWS), "levels": anatomy.LEVELS, "corners": anatomy.CORNERS,
        "point_names": [f"{lv}_{p}" for v in VIEWS for lv in anatomy.LEVELS[v] for p in anatomy.POINTS],
        "inputs": {
            "serving_default": "images: string [B], encoded PNG, 8- or 16-bit grey display image (bone bright)",
            "image_tensor": "images: float32 [B, H, W, 1] in [0, 1]",
            "keypoints": "images: float32 [B, H, W, 1] in [0, 1]",
            "grader": f"crops: float32 [N, {gr.input_size}, {gr.input_size}, 1], canonical corner crops"
                      + (" after CLAHE" if gr.clahe else ""),
        },
        "outputs": list(OUTPUT_NAMES),
        "grades_missing_value": -1,
        "keypoints": {"preset": kp.preset, "backbone": kp.backbone, "input_size": list(kp.input_size),
                      "confidence_threshold": kp.confidence_threshold,
                      "training_data": keypoints_config.get("training_data")},
        "grader": {"preset": gr.preset, "backbone": gr.backbone, "input_size": gr.input_size,
                   "clahe": gr.clahe, "extent": gr.extent, "patch_depth_px": gr.patch_depth_px,
                   "training_data": grader_config.get("training_data")},
    }


def export_runs(keypoints_run, grader_run, out) -> Path:
    from .train import BEST, read_config, trained_on_phantoms
    from .train_grader import load_grader
    from .train_keypoints import build_model

    kp_run, gr_run = read_config(keypoints_run), read_config(grader_run)
    kp = KeypointConfig.from_dict(kp_run["keypoints"])
    model = build_model(kp)
    model.load_weights(str(Path(keypoints_run) / BEST))
    grader, gr = load_grader(grader_run)
    phantom = trained_on_phantoms(kp_run) and trained_on_phantoms(gr_run)
    return export_models(model, kp, grader, gr, out, build_metadata(kp, gr, kp_run, gr_run, phantom))
