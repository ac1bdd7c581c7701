"""A network whose weights the scoring module keeps as copies, each large float32 tensor (the
kernels) in float16, read back as float32 whenever the network is called.

Why: it halves the SavedModel (the shipped demo is a tracked file with a size limit, and a TF Serving
host loads it faster), and because the module calls these copies in memory too, scoring from run
folders, from the export and through TF Serving compute with the same rounded weights. The rounding
(relative 2^-11) moves calibrated probabilities by about 1e-3 (bench/RESULTS.md, issue 29).
"""

from __future__ import annotations

import keras
import tensorflow as tf

#: Weights with fewer values (biases, normalisation statistics) stay float32: they are a small part of
#: the file, and a normalisation variance can be too small for float16's range.
HALF_FROM = 256


class HalfStoredNetwork:
    """Calls ``network`` (a Keras model) with its weights read from :attr:`variables`, the stored copies,
    so a function traced through it captures those copies and not the network's own float32 variables."""

    def __init__(self, network):
        self.network = network
        self.variables = [tf.Variable(stored_value(w), trainable=False, name=w.path.replace("/", "_"))
                          for w in network.weights]

    def __call__(self, inputs, training: bool = False):
        mapping = [(w, tf.cast(v, w.dtype)) for w, v in zip(self.network.weights, self.variables)]
        with keras.StatelessScope(state_mapping=mapping):
            return self.network(inputs, training=training)


def stored(network):
    """``network`` as a :class:`HalfStoredNetwork` (None and networks already wrapped pass through)."""
    return network if network is None or isinstance(network, HalfStoredNetwork) else HalfStoredNetwork(network)


def variables_of(network) -> list:
    """The variables a module must track to save ``network``: the stored copies, or a plain Keras
    network's own (a stage-1 double built outside :meth:`ScoringModule.from_models`)."""
    if network is None:
        return []
    return network.variables if isinstance(network, HalfStoredNetwork) else [w.value for w in network.weights]


def stored_value(weight):
    """What is stored of one Keras weight: float16 when it is a float32 tensor of HALF_FROM values or more."""
    value = tf.convert_to_tensor(weight.value)
    halve = value.dtype == tf.float32 and value.shape.num_elements() >= HALF_FROM
    return tf.cast(value, tf.float16) if halve else value
