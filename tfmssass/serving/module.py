"""Both trained stages as one ``tf.Module``: the functions that scoring runs in memory and that the
exported SavedModel serves, so a run folder, an exported model and TF Serving compute the same.

Per radiograph, :meth:`ScoringModule.read` runs stage 1 (coarse-to-fine detection) and cuts the
canonical corner crops; :meth:`ScoringModule.grade` runs stage 2 on any batch of crops (several
radiographs' crops at once when scoring a folder); :meth:`ScoringModule.finish` applies the bridge
rule and the review flags. The SavedModel's signatures chain the same three functions.

Signatures (inputs):

- ``serving_default``: ``images`` = a batch of encoded PNG strings (8- or 16-bit grey display
  images, bone bright; REST sends them as ``{"b64": ...}``).
- ``image_tensor``: ``images`` = float32 [B, H, W, 1] in [0, 1], any H and W.
- ``keypoints``: stage 1 alone on float32 [B, H, W, 1]; ``grader``: stage 2 alone on canonical
  corner crops float32 [N, S, S, 1] (already CLAHE-processed if the grader uses it), answering
  calibrated probabilities as the whole pipeline does.

Outputs of the whole pipeline (:data:`OUTPUT_NAMES`): ``keypoints`` [B, 24, 2] (original pixels,
NaN outside the view or when the spine is not found), ``keypoint_confidence`` [B, 24], ``view`` [B]
(string), ``spine_found`` [B], ``grade_probabilities`` [B, 12, 4] (calibrated: the run's
temperature and its training cohort's prior, :mod:`tfmssass.stages.grader.calibration`),
``grade_prior`` [B, 4] (the prior those probabilities assume, so a client can change it by Bayes'
rule), ``gradable_probability`` [B, 12] (calibrated probability that the corner can be graded at all;
1 for a grader without the gradability head), ``grades`` [B, 12] (-1 = level not graded, -2 = corner
not gradable), ``corner_confidence`` [B, 12], ``review`` [B, 12],
``review_reason`` [B, 12] (int32 bits: why a corner is flagged, ``metadata.json``'s ``review`` has the
table and the thresholds the graph used; :data:`tfmssass.stages.grader.grades.REVIEW_REASONS`), and
``model_note`` [B] (says so when the weights are phantom-trained, so a TF Serving client learns it
too), ``orientation`` [B] (degrees the film was turned clockwise to be read upright; -1 when the model
has no orientation classifier), ``finding`` [B] (0 when scored, else why not: ``metadata.json``'s
``findings`` has the words), ``level_plausible`` [B, 6] (levels the plausibility gate let through) and
``level_implant`` [B, 6] (levels under metal-dense material, not graded: :mod:`tfmssass.stages.implants`)
and ``level_on_film`` [B, 6] (false for a level the film does not reach: its points are NaN, never guessed;
:mod:`tfmssass.stages.keypoints.film_edge`).
"""

from __future__ import annotations

import json
from typing import NamedTuple

import tensorflow as tf

from tfmssass import __version__
from tfmssass.core import anatomy
from tfmssass.core.config import (
    PHANTOM_WARNING,
    POINT_REVIEW,
    PROBABILITY_FLOOR,
    REVIEW_THRESHOLD,
    GraderConfig,
    KeypointConfig,
)
from tfmssass.ops.image import apply_matrix, quarter_turn_matrix, shrink_to_long_side
from tfmssass.serving.weights import stored, variables_of
from tfmssass.stages.grader.calibration import Calibration, calibrate_in_graph, read_calibration
from tfmssass.stages.grader.crops import corner_crops
from tfmssass.stages.grader.grades import NOT_GRADABLE, REVIEW_REASONS, grade_corners, gradability_band
from tfmssass.stages.grader.model import grader_outputs
from tfmssass.stages.implants import MIN_SHARE, SATURATED, dense_levels, read_share_limit
from tfmssass.stages.keypoints.detect import (
    FINDINGS,
    FOUND,
    NOT_LATERAL_FILM,
    ORIENTATION_UNSURE,
    Stage1,
)
from tfmssass.stages.keypoints.orientation import classifier_about, load_orientation
from tfmssass.stages.keypoints.plausibility import read_limits
from tfmssass.stages.runs import (
    ENSEMBLE,
    learning_warning,
    load_grader,
    load_keypoints,
    read_config,
    trained_on_phantoms,
)

OUTPUT_NAMES = ("keypoints", "keypoint_confidence", "view", "spine_found", "grade_probabilities", "grade_prior",
                "gradable_probability", "grades", "corner_confidence", "review", "review_reason", "model_note",
                "orientation", "finding", "level_plausible", "level_implant", "level_on_film")


class Reading(NamedTuple):
    """Stage 1 and the crops of one radiograph (:meth:`ScoringModule.read`)."""

    points: object  # [24, 2] original pixels
    confidence: object  # [24]
    view: object  # int32 index into anatomy.VIEWS
    found: object  # bool
    crops: object  # [12, S, S] inf, sup per level; zeros for levels not cut
    cut: object  # [6] levels cut (and graded)
    level_confidence: object  # [6] lower confidence of each level's two points
    turns: object  # int32 quarter turns the film was stored from upright; -1 not checked
    finding: object  # int32 outcome code (stage 1's FINDINGS)
    level_plausible: object  # [6] levels the plausibility gate let through
    level_implant: object  # [6] levels under metal-dense material
    level_on_film: object  # [6] levels the film reaches


class ScoringModule(tf.Module):
    """Stage 1, the crops, stage 2 and the grading rules as traced functions.

    ``stage1`` is a :class:`~tfmssass.stages.keypoints.detect.Stage1` (or anything with its
    ``detect``), ``grader`` the Keras corner grader; ``confidence_threshold`` is the key-point
    confidence below which a level is not graded at all; ``calibration`` turns the grader's softmax
    into calibrated cohort probabilities (in the graph, so every signature answers the same).
    """

    def __init__(self, stage1, grader, crop, confidence_threshold: float, metadata: dict,
                 review_threshold: float = REVIEW_THRESHOLD, point_review: float = POINT_REVIEW,
                 calibration: Calibration = Calibration()):
        super().__init__(name="tfmssass")
        self.stage1, self.crop, self.confidence_threshold = stage1, crop, float(confidence_threshold)
        self._metadata = json.dumps(metadata)  # a string: tf.Module would wrap a dict for tracking
        self._note = str(metadata.get("note", ""))  # every output carries it
        self.review_threshold, self.point_review = review_threshold, point_review
        self.implant_share = float(metadata.get("implants", {}).get("min_share", MIN_SHARE))
        grader = stored(grader)
        # each weight once in the SavedModel (keras' ExportArchive stored every weight twice), the large
        # ones in float16 (:mod:`.weights`)
        self.model_variables = (variables_of(getattr(stage1, "model", None))
                                + variables_of(getattr(stage1, "orientation", None)) + variables_of(grader))
        size = crop.size
        self.prior = tf.constant(calibration.prior, tf.float32)
        self.gradable_threshold = float(calibration.gradable_threshold)

        def calibrated(crops):
            p, g = calibrate_in_graph(*(tf.cast(t, tf.float32) for t in grader_outputs(grader, crops)), calibration)
            return {"grade_probabilities": p, "gradable_probability": g}

        self.grade = tf.function(calibrated, input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32, name="crops")],
                                 autograph=False)
        self.read = tf.function(self._read, autograph=False, input_signature=[
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([], tf.int32)])
        self.finish = tf.function(self._finish, autograph=False, input_signature=[
            tf.TensorSpec([None, 12, 4], tf.float32), tf.TensorSpec([None, 12], tf.float32),
            tf.TensorSpec([None, 6], tf.float32), tf.TensorSpec([None, 6], tf.bool)])

    @property
    def metadata(self) -> dict:
        """What the model is, with the thresholds its grading rule decides with (``review``)."""
        review = {"review_threshold": self.review_threshold, "point_review": self.point_review,
                  "gradable_threshold": self.gradable_threshold,
                  "gradability_review": list(gradability_band(self.gradable_threshold)),
                  "reasons": {str(bit): text for bit, text in REVIEW_REASONS.items()},
                  "meaning": "review_reason: the sum of the bits that apply; 0 = not flagged; review: any bit "
                             f"but {NOT_GRADABLE} (a confident not gradable)"}
        return {**json.loads(self._metadata), "review": review}

    @classmethod
    def from_models(cls, keypoint_model, kp: KeypointConfig, grader, gr: GraderConfig, metadata: dict,
                    calibration: Calibration = Calibration(), orientation=None, limits: dict | None = None,
                    **thresholds) -> "ScoringModule":
        stage1 = Stage1(stored(keypoint_model), kp.input_size, kp.cache_long_side, kp.confidence_threshold,
                        kp.min_points, orientation=stored(orientation), limits=limits)
        return cls(stage1, grader, gr.crop, kp.confidence_threshold, metadata, calibration=calibration,
                   **thresholds)

    @classmethod
    def from_runs(cls, keypoints_run, grader_run, **thresholds) -> "ScoringModule":
        """Both stages from their training run folders (best epochs), with the grader run's calibration."""
        keypoint_model, kp = load_keypoints(keypoints_run)
        grader, gr = load_grader(grader_run)
        kp_run, gr_run = read_config(keypoints_run), read_config(grader_run)
        phantom = trained_on_phantoms(kp_run) and trained_on_phantoms(gr_run)
        calibration = read_calibration(grader_run)
        orientation, limits = load_orientation(keypoints_run), read_limits(keypoints_run)
        network = classifier_about(keypoints_run)["network"] if orientation is not None else None
        metadata = build_metadata(kp, gr, kp_run, gr_run, phantom, calibration, orientation is not None, limits,
                                  orientation_network=network, implant_share=read_share_limit(keypoints_run))
        undertrained = [w for w in (learning_warning(keypoints_run), learning_warning(grader_run)) if w]
        if undertrained:
            metadata["undertrained"] = undertrained
        return cls.from_models(keypoint_model, kp, grader, gr, metadata, calibration, orientation, limits,
                               **thresholds)

    def _upright(self, image, view_hint):
        """Stage 1 on the film turned upright: (detection with its points mapped back to the stored pixels
        and "orientation unsure" as its outcome where it applies, the upright film, the points in it,
        quarter turns or -1 when not checked). Everything after the turn runs on the upright film, so a
        film stored turned is read exactly as its upright self."""
        small, scale = shrink_to_long_side(image, self.stage1.long_side)
        turns, sure, not_lateral = self.stage1.orient(small)
        quarter = tf.maximum(turns, 0)
        back = tf.math.floormod(-quarter, 4)
        upright = tf.image.rot90(image[..., None], back)[..., 0]
        upright_small = tf.image.rot90(small[..., None], back)[..., 0]
        scale = tf.where(tf.equal(back % 2, 1), tf.gather(scale, [1, 0]), scale)  # a quarter turn swaps the axes
        det = self.stage1.detect_shrunk(upright_small, scale, view_hint)
        to_stored = quarter_turn_matrix(quarter, tf.shape(upright)[0], tf.shape(upright)[1])
        stored_points = apply_matrix(to_stored, det.points)  # NaN stays NaN
        finding = tf.where(sure | tf.not_equal(det.finding, FOUND), det.finding, ORIENTATION_UNSURE)
        finding = tf.where(not_lateral, NOT_LATERAL_FILM, finding)
        return det._replace(points=stored_points, finding=finding), upright, det.points, turns

    def _read(self, image, view_hint):
        det, upright, upright_points, turns = self._upright(image, view_hint)
        span = det.view * 12 + tf.range(12)
        view_conf = tf.gather(det.confidence, span)
        level_conf = tf.minimum(view_conf[0::2], view_conf[1::2])
        found = tf.equal(det.finding, FOUND)
        implant = dense_levels(upright, tf.gather(upright_points, span), self.implant_share) & found
        to_cut = (level_conf >= self.confidence_threshold) & found & det.level_plausible & det.on_film & ~implant
        crops, cut = corner_crops(upright, tf.gather(upright_points, span), to_cut, self.crop)
        return Reading(det.points, det.confidence, det.view, found, crops, cut, level_conf, turns, det.finding,
                       det.level_plausible, implant, det.on_film)

    def _finish(self, probabilities, gradable, level_confidence, cut):
        grades, confidence, review, reason = grade_corners(probabilities, level_confidence, cut,
                                                           self.review_threshold, self.point_review, gradable,
                                                           self.gradable_threshold)
        return {"grades": grades, "corner_confidence": confidence, "review": review, "review_reason": reason}

    def outputs(self, reading: Reading, graded: dict) -> dict:
        """The named outputs of a batch from its readings and the grader's calibrated answers on its crops
        (``grade_probabilities`` [B, 12, 4], ``gradable_probability`` [B, 12])."""
        probabilities, gradable = graded["grade_probabilities"], graded["gradable_probability"]
        finished = self.finish(probabilities, gradable, reading.level_confidence, reading.cut)
        return {"keypoints": reading.points, "keypoint_confidence": reading.confidence,
                "view": tf.gather(tf.constant(anatomy.VIEWS), reading.view), "spine_found": reading.found,
                "grade_probabilities": probabilities, "gradable_probability": gradable,
                "grade_prior": tf.tile(self.prior[None], [tf.shape(reading.found)[0], 1]), **finished,
                "model_note": tf.fill(tf.shape(reading.found), self._note),
                "orientation": tf.where(reading.turns >= 0, reading.turns * 90, -1), "finding": reading.finding,
                "level_plausible": reading.level_plausible, "level_implant": reading.level_implant,
                "level_on_film": reading.level_on_film}

    def _reading_signature(self):
        s = self.crop.size
        return Reading(tf.TensorSpec([24, 2], tf.float32), tf.TensorSpec([24], tf.float32),
                       tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.bool), tf.TensorSpec([12, s, s], tf.float32),
                       tf.TensorSpec([6], tf.bool), tf.TensorSpec([6], tf.float32), tf.TensorSpec([], tf.int32),
                       tf.TensorSpec([], tf.int32), tf.TensorSpec([6], tf.bool), tf.TensorSpec([6], tf.bool),
                       tf.TensorSpec([6], tf.bool))

    def run(self, images, decode_png: bool) -> dict:
        """The whole pipeline on a batch: PNG strings [B] or float images [B, H, W, 1]."""
        def one(x):
            image = (tf.cast(tf.io.decode_png(x, channels=1, dtype=tf.uint16), tf.float32) / 65535.0
                     if decode_png else x)
            return self.read(image[:, :, 0], tf.constant(-1))

        reading = tf.map_fn(one, images, fn_output_signature=self._reading_signature())
        s = self.crop.size
        graded = self.grade(tf.reshape(reading.crops, [-1, s, s, 1]))
        return self.outputs(reading, {"grade_probabilities": tf.reshape(graded["grade_probabilities"], [-1, 12, 4]),
                                      "gradable_probability": tf.reshape(graded["gradable_probability"], [-1, 12])})

    def keypoints_only(self, images) -> dict:
        def one(x):
            det = self._upright(x[:, :, 0], tf.constant(-1))[0]
            return det.points, det.confidence, det.view, tf.equal(det.finding, FOUND)

        points, confidence, view, found = tf.map_fn(one, images, fn_output_signature=(
            tf.TensorSpec([24, 2], tf.float32), tf.TensorSpec([24], tf.float32), tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.bool)))
        return {"keypoints": points, "keypoint_confidence": confidence,
                "view": tf.gather(tf.constant(anatomy.VIEWS), view), "spine_found": found}

    def signatures(self) -> dict:
        """The SavedModel's signature functions, all calling this module's traced functions."""
        images = tf.TensorSpec([None, None, None, 1], tf.float32, name="images")
        return {
            "serving_default": tf.function(lambda images: self.run(images, decode_png=True), autograph=False,
                                           input_signature=[tf.TensorSpec([None], tf.string, name="images")]),
            "image_tensor": tf.function(lambda images: self.run(images, decode_png=False), autograph=False,
                                        input_signature=[images]),
            "keypoints": tf.function(self.keypoints_only, autograph=False, input_signature=[images]),
            "grader": self.grade,
        }


def build_metadata(kp: KeypointConfig, gr: GraderConfig, keypoints_config: dict, grader_config: dict,
                   phantom: bool, calibration: Calibration = Calibration(), orientation: bool = False,
                   limits: dict | None = None, orientation_network: int | None = None,
                   implant_share: float = MIN_SHARE) -> dict:
    """What the model is, written beside the SavedModel (``metadata.json``) and kept in memory;
    ``orientation_network``: the classifier's design (:mod:`..stages.keypoints.orientation`);
    ``implant_share``: the implant rule's limit learnt with stage 1 (:mod:`..stages.implants`)."""
    return {
        "package": "tfmssass", "version": __version__,
        "phantom_trained": phantom,
        "note": PHANTOM_WARNING if phantom else "",
        "classes": {str(k): v for k, v in anatomy.GRADES.items()},
        "views": list(anatomy.VIEWS), "levels": anatomy.LEVELS, "corners": anatomy.CORNERS,
        "point_names": list(anatomy.POINT_NAMES),
        "inputs": {
            "serving_default": "images: string [B], encoded PNG, 8- or 16-bit grey display image (bone bright)",
            "image_tensor": "images: float32 [B, H, W, 1] in [0, 1]",
            "keypoints": "images: float32 [B, H, W, 1] in [0, 1]",
            "grader": f"crops: float32 [N, {gr.input_size}, {gr.input_size}, 1], canonical corner crops"
                      + (" after CLAHE" if gr.clahe else ""),
        },
        "outputs": list(OUTPUT_NAMES),
        "grades_missing_value": -1, "grades_not_gradable_value": -2,
        "keypoints": {"preset": kp.preset, "backbone": kp.backbone, "input_size": list(kp.input_size),
                      "confidence_threshold": kp.confidence_threshold,
                      "training_data": keypoints_config.get("training_data")},
        "grader": {"preset": gr.preset, "backbone": gr.backbone, "input_size": gr.input_size,
                   "clahe": gr.clahe, "extent": gr.extent, "patch_depth_px": gr.patch_depth_px,
                   "gradability": gr.gradability, "training_data": grader_config.get("training_data"),
                   **({ENSEMBLE: [m["calibration"] for m in grader_config[ENSEMBLE]["members"]]}
                      if ENSEMBLE in grader_config else {})},  # the graders averaged, each one's calibration
        "findings": {str(code): text for code, text in FINDINGS.items()},
        "orientation": {"classifier": orientation, **({"network": orientation_network} if orientation else {}),
                        "meaning": "degrees the film was turned clockwise to be read upright; -1 not checked"},
        "plausibility": limits,
        "implants": {"saturated": SATURATED, "min_share": implant_share,
                     "meaning": "level_implant: that share of the level's square saturated (metal, or dense "
                                "overlap); not graded"},
        "calibration": {**calibration.to_dict(),
                        "formula": f"softmax(log(max(p, {PROBABILITY_FLOOR:g})) / temperature + bias); assumes prior"},
    }
