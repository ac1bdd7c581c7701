"""Several graders of the same corner crops as one: the mean of their calibrated probabilities.

Why: two graders trained apart misread different corners, and one corner misread at one visit is
what spoils the change between visits. On the phantom cohorts of bench/RESULTS.md (issue 29,
fourteenth pass) the demo's grader and one that also learnt hard films, averaged, agreed better on
change than either alone.

Each member's own calibration is applied before the average (its temperature and bias, then Bayes'
rule from its training prior to the ensemble's, the mean of the members'; its gradability scaling),
so members calibrated on different cohorts are averaged as probabilities of the same thing. The
ensemble is then calibrated already: its run folder's ``calibration.json`` is the identity under
that prior (:func:`ensemble_calibration`), and export, scoring and evaluation use it as any grader.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfmssass.core.config import GraderConfig
from tfmssass.stages.grader.calibration import Calibration, calibrate_in_graph
from tfmssass.stages.grader.model import CornerGrader, grader_outputs


def ensemble_prior(calibrations: list[Calibration]) -> tuple:
    """The grade frequencies the ensemble's probabilities assume: the mean of its members' priors."""
    prior = np.mean([np.asarray(c.prior, float) for c in calibrations], axis=0)
    return tuple(float(v) for v in prior / prior.sum())


def ensemble_calibration(calibrations: list[Calibration]) -> Calibration:
    """What the ensemble's run keeps as its calibration: nothing more to apply (its members' are in the
    network), the ensemble's prior, and the members' gradable threshold (their mean: each member's
    comes from the same cost rule, so they differ little)."""
    return Calibration(prior=ensemble_prior(calibrations), fitted=True,
                       gradable_threshold=float(np.mean([c.gradable_threshold for c in calibrations])),
                       validation={"members": [c.validation for c in calibrations]})


def build_ensemble(configs: list[GraderConfig], calibrations: list[Calibration]) -> keras.Model:
    """Crop [B, S, S, 1] → {"grades": [B, 4], "gradable": [B, 1]}, each the mean over the members (named
    ``member_0``, ``member_1``, … in the order given) of their calibrated answers."""
    size = configs[0].input_size
    crops = keras.Input((size, size, 1), name="crop")
    prior = ensemble_prior(calibrations)
    grades, gradable = [], []
    for k, (config, calibration) in enumerate(zip(configs, calibrations)):
        member = CornerGrader(config.backbone, config.input_size, gradability=config.gradability, name=f"member_{k}")
        p, g = calibrate_in_graph(*grader_outputs(member, crops), calibration, prior)
        grades.append(p)
        gradable.append(g)
    outputs = {"grades": ops.mean(ops.stack(grades), axis=0),
               "gradable": ops.expand_dims(ops.mean(ops.stack(gradable), axis=0), -1)}
    return keras.Model(crops, outputs, name="grader_ensemble")
