"""Stage-2 corner grader: one canonical corner crop → probabilities of mSASSS grades 0–3, and the
probability that the corner can be graded at all.

A 4-class softmax, as in the paper, rather than an ordinal head: it is what the paper evaluated,
keeps per-grade probabilities for review flags and ROC curves, and needs no threshold tuning.
Ordinality is measured instead, by quadratic weighted kappa.

Gradability is a separate sigmoid head on the same features, not a fifth class. A corner a reader
calls not gradable (``NG``) has a true grade nobody can see, so it teaches the head only and never
competes with the grades: the grade softmax stays the probability of each grade *if* the corner can
be graded, which is what the bridge rule, the calibration to a cohort's prior and the joint decoding
of visits need, and what TF Serving clients already read. The head is trained on every corner read
(NG: 0, graded: 1) and calibrated on its own (:mod:`tfmssass.stages.grader.calibration`). Backbones come from
``keras.applications`` (``--init imagenet`` through Keras' own download, or a local file), or ``tiny``, a
small residual network for CPUs, phantoms and tests. The grey crop in [0, 1] is turned into what
each backbone expects inside the model, so serving needs no preprocessing.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from tfmssass.core.config import GraderConfig
from tfmssass.data.tfrecords import NOT_GRADABLE_RECORD  # the training label of a reader's NG (grades 0-3)
from tfmssass.stages.dtype import base_config, dtype_policy

BACKBONES = {
    "resnet50": ("ResNet50", "caffe"), "resnet101": ("ResNet101", "caffe"),
    "resnet152": ("ResNet152", "caffe"), "resnet50v2": ("ResNet50V2", "tf"),
    "resnet101v2": ("ResNet101V2", "tf"), "resnet152v2": ("ResNet152V2", "tf"),
    "efficientnetv2b0": ("EfficientNetV2B0", "raw"), "efficientnetv2s": ("EfficientNetV2S", "raw"),
    "efficientnetv2m": ("EfficientNetV2M", "raw"), "tiny": (None, "unit"),
}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _to_backbone_input(x, mode: str):
    """Grey [0, 1] → the input convention of the backbone's ImageNet training."""
    if mode == "unit":
        return x
    rgb = ops.concatenate([x, x, x], axis=-1) * 255.0
    if mode == "caffe":  # BGR, mean-subtracted (ResNet v1)
        return rgb - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=rgb.dtype)
    if mode == "tf":  # [-1, 1] (ResNet v2)
        return rgb / 127.5 - 1.0
    return rgb  # EfficientNetV2 rescales inside


#: BatchNorm momentum of the small network. Keras's 0.99 leaves the moving statistics near their
#: initial values for the first few hundred steps, so inference-mode grades lag far behind training.
_BN = dict(momentum=0.9)


def _tiny_backbone(x):
    def block(x, filters, stride):
        shortcut = x
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.BatchNormalization(**_BN)(y)
        y = layers.ReLU()(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization(**_BN)(y)
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
            shortcut = layers.BatchNormalization(**_BN)(shortcut)
        return layers.ReLU()(layers.Add()([y, shortcut]))

    x = layers.Conv2D(24, 5, strides=2, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization(**_BN)(x))
    for filters in (32, 64, 128, 192):
        x = block(x, filters, 2)
        x = block(x, filters, 1)
    return layers.GlobalAveragePooling2D()(x)


def grade_loss(labels, probabilities):
    """Cross-entropy of the grades over the corners that have one; an NG corner (label 4) adds nothing."""
    labels = ops.reshape(ops.cast(labels, "int32"), [-1])
    graded = ops.cast(labels < NOT_GRADABLE_RECORD, probabilities.dtype)
    return keras.losses.sparse_categorical_crossentropy(ops.minimum(labels, 3), probabilities) * graded


def gradability_loss(labels, gradable):
    """Binary cross-entropy of "can be graded" (every graded corner) against "NG" (label 4)."""
    target = ops.cast(ops.reshape(ops.cast(labels, "int32"), [-1, 1]) < NOT_GRADABLE_RECORD, gradable.dtype)
    return keras.losses.binary_crossentropy(target, gradable)


def grader_outputs(model, crops, training: bool = False):
    """(grade probabilities [B, 4], P(gradable) [B]) of any grader: one without the gradability head
    (trained before ``NG`` existed) answers 1, "gradable", for every corner."""
    out = model(crops, training=training)
    if isinstance(out, dict):
        return out["grades"], ops.reshape(out["gradable"], [-1])
    return out, ops.ones(ops.shape(out)[:1], dtype=out.dtype)


@keras.saving.register_keras_serializable(package="tfmssass")
class CornerGrader(keras.Model):
    """Crop [B, S, S, 1] in [0, 1] → {"grades": probabilities [B, 4], "gradable": P [B, 1]} (grades alone,
    [B, 4], for a grader built without the gradability head)."""

    def __init__(self, backbone="tiny", input_size=128, num_classes=4, dropout=0.2, dtype=None,
                 gradability: bool = True, **kwargs):
        with dtype_policy(dtype):  # layers take the policy in force when made
            if backbone not in BACKBONES:
                raise ValueError(f"unknown backbone {backbone!r} (expected {', '.join(BACKBONES)})")
            app_name, mode = BACKBONES[backbone]
            inputs = keras.Input((input_size, input_size, 1), name="crop")
            x = _to_backbone_input(inputs, mode)
            if app_name is None:
                features = _tiny_backbone(x)
            else:
                app = getattr(keras.applications, app_name)
                kwargs_app = dict(include_top=False, weights=None, input_shape=(input_size, input_size, 3),
                                  pooling="avg")
                if mode == "raw":
                    kwargs_app["include_preprocessing"] = True
                net = app(**kwargs_app)
                net.name = "backbone"
                features = net(x)
            features = layers.Dropout(dropout)(features)
            outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="grades")(features)
            if gradability:  # its weights are told apart by name ("gradable"), wherever Keras lists them
                gradable = layers.Dense(1, activation="sigmoid", dtype="float32", name="gradable")(features)
                outputs = {"grades": outputs, "gradable": gradable}
            super().__init__(inputs=inputs, outputs=outputs, **kwargs)
            self.backbone_name, self.input_size = backbone, input_size
            self.num_classes, self.dropout, self.gradability = num_classes, dropout, gradability

    def load_imagenet(self) -> None:
        """The backbone's ImageNet weights through Keras' own download and cache (``~/.keras/models``),
        for ``--init imagenet``: the start for real radiographs when no earlier run exists."""
        app_name, mode = BACKBONES[self.backbone_name]
        if app_name is None:
            raise ValueError(f"--init imagenet: the {self.backbone_name} grader has no ImageNet weights "
                             "(choose a keras.applications backbone, e.g. --preset paper)")
        kwargs = dict(include_top=False, weights="imagenet", input_shape=(self.input_size, self.input_size, 3),
                      pooling="avg")
        if mode == "raw":
            kwargs["include_preprocessing"] = True
        self.get_layer("backbone").set_weights(getattr(keras.applications, app_name)(**kwargs).get_weights())

    def load_backbone_weights(self, path: str) -> None:
        """ImageNet (or any) weights for the backbone from a local file, e.g. a keras.applications
        ``..._notop.h5``; nothing is downloaded."""
        if self.backbone_name == "tiny":
            self.load_weights(path, skip_mismatch=True)
        else:
            self.get_layer("backbone").load_weights(path)

    def load_grader_weights(self, path: str) -> None:
        """A whole earlier grader's weights of this backbone (a run's best epoch, or an export's). One
        trained before the gradability head existed gives every weight but the head's, which then
        starts from scratch (``train grader --init demo`` with the first demo)."""
        try:
            self.load_weights(path)
            return
        except ValueError:
            if not self.gradability:
                raise
        donor = CornerGrader(self.backbone_name, self.input_size, self.num_classes, self.dropout, gradability=False)
        donor.load_weights(path)
        for weight, value in zip([w for w in self.weights if "gradable" not in w.path], donor.weights):
            weight.assign(value)

    def get_config(self):
        return {**base_config(self), "backbone": self.backbone_name, "input_size": self.input_size,
                "num_classes": self.num_classes, "dropout": self.dropout, "gradability": self.gradability}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_grader(config: GraderConfig) -> CornerGrader:
    """The network a training configuration asks for."""
    return CornerGrader(config.backbone, config.input_size, gradability=config.gradability)
