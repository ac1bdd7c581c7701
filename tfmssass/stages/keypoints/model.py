"""HRNet for disk points (stage 1), after Sun et al. 2019 and the official pose HRNet.

A stem reduces the image 4×, then four stages keep a high-resolution branch while adding
lower-resolution ones (each half the size, twice the channels), exchanging information between
all branches after every module (multi-resolution fusion). Heatmaps come from the
highest-resolution branch at 1/4 of the input. The input is one grey channel, height × width; the
paper's 256×192 is taken as 256 high and 192 wide, since lateral spine radiographs are portrait.
"""

from __future__ import annotations

import keras
from keras import layers

from tfmssass.core.anatomy import NUM_POINTS
from tfmssass.core.config import KeypointConfig
from tfmssass.stages.dtype import base_config, dtype_policy
from tfmssass.stages.keypoints.presets import HRNET_PRESETS, PAPER_INPUT

_BN = dict(momentum=0.9, epsilon=1e-5)


def _conv_bn(x, filters, kernel, strides=1, relu=True, name=None):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      name=None if name is None else f"{name}_conv")(x)
    x = layers.BatchNormalization(**_BN, name=None if name is None else f"{name}_bn")(x)
    return layers.ReLU()(x) if relu else x


def _basic_block(x, filters):
    shortcut = x
    y = _conv_bn(x, filters, 3)
    y = _conv_bn(y, filters, 3, relu=False)
    if shortcut.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, relu=False)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def _bottleneck(x, planes, expansion=4):
    shortcut = x
    y = _conv_bn(x, planes, 1)
    y = _conv_bn(y, planes, 3)
    y = _conv_bn(y, planes * expansion, 1, relu=False)
    if shortcut.shape[-1] != planes * expansion:
        shortcut = _conv_bn(x, planes * expansion, 1, relu=False)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def _fuse(branches, widths, multi_scale_output=True):
    """Every output branch sums all inputs brought to its resolution and width."""
    outputs = []
    for i in range(len(branches) if multi_scale_output else 1):
        terms = []
        for j, x in enumerate(branches):
            if j == i:
                terms.append(x)
            elif j > i:  # lower resolution: 1×1 conv to width, then nearest upsampling
                y = _conv_bn(x, widths[i], 1, relu=False)
                terms.append(layers.UpSampling2D(size=2 ** (j - i), interpolation="nearest")(y))
            else:  # higher resolution: strided 3×3 convs, ReLU between, none after the last
                y = x
                for k in range(i - j):
                    last = k == i - j - 1
                    y = _conv_bn(y, widths[i] if last else widths[j], 3, strides=2, relu=not last)
                terms.append(y)
        outputs.append(layers.ReLU()(layers.Add()(terms)) if len(terms) > 1 else terms[0])
    return outputs


@keras.saving.register_keras_serializable(package="tfmssass")
class HRNet(keras.Model):
    """HRNet key-point network: grey image [B, H, W, 1] → heatmaps [B, H/4, W/4, num_points]."""

    def __init__(self, width=32, num_points=24, input_size=PAPER_INPUT, stage_modules=(1, 4, 3),
                 blocks=4, stem_width=64, stem_blocks=4, dtype=None, **kwargs):
        with dtype_policy(dtype):  # layers take the policy in force when made
            height, wide = input_size
            if height % 32 or wide % 32:
                raise ValueError("HRNet input height and width must be multiples of 32")
            inputs = keras.Input(shape=(height, wide, 1), name="image")
            x = _conv_bn(inputs, stem_width, 3, strides=2, name="stem1")
            x = _conv_bn(x, stem_width, 3, strides=2, name="stem2")
            for _ in range(stem_blocks):
                x = _bottleneck(x, stem_width)
            widths = [width]
            branches = [_conv_bn(x, width, 3)]
            previous = x
            for stage, modules in enumerate(stage_modules, start=2):
                # transition: a new branch at half the resolution of the last one
                widths = [width * 2**i for i in range(stage)]
                source = previous if stage == 2 else branches[-1]
                branches = branches + [_conv_bn(source, widths[-1], 3, strides=2)]
                for module in range(modules):
                    branches = [_repeat_blocks(b, w, blocks) for b, w in zip(branches, widths)]
                    last = stage == 1 + len(stage_modules) and module == modules - 1
                    branches = _fuse(branches, widths, multi_scale_output=not last)
            heatmaps = layers.Conv2D(num_points, 1, name="heatmaps", dtype="float32")(branches[0])
            super().__init__(inputs=inputs, outputs=heatmaps, **kwargs)
            self.width, self.num_points, self.input_size = width, num_points, (height, wide)
            self.stage_modules, self.blocks = tuple(stage_modules), blocks
            self.stem_width, self.stem_blocks = stem_width, stem_blocks

    def get_config(self):
        return {
            **base_config(self), "width": self.width,
            "num_points": self.num_points, "input_size": list(self.input_size),
            "stage_modules": list(self.stage_modules), "blocks": self.blocks,
            "stem_width": self.stem_width, "stem_blocks": self.stem_blocks,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "HRNet":
        if preset not in HRNET_PRESETS:
            raise ValueError(f"unknown HRNet preset {preset!r} (expected {', '.join(HRNET_PRESETS)})")
        return cls(**{**HRNET_PRESETS[preset], **overrides})


def _repeat_blocks(x, width, blocks):
    for _ in range(blocks):
        x = _basic_block(x, width)
    return x


def build_hrnet(config: KeypointConfig) -> HRNet:
    """The network a training configuration asks for."""
    return HRNet.from_preset(config.backbone, num_points=NUM_POINTS, input_size=config.input_size)
