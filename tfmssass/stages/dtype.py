"""A network's dtype policy travels with its configuration.

The models build their layers in ``__init__`` (functional graphs, as keras-hub's backbones do), so
a layer takes the dtype policy in force while it is made. Building inside :func:`dtype_policy`
lets a model take ``dtype`` (a policy name, e.g. ``mixed_float16``); ``get_config`` returns it, so
a model saved under mixed precision comes back under mixed precision whatever the global policy
is when it is loaded.
"""

from __future__ import annotations

import contextlib

import keras


@contextlib.contextmanager
def dtype_policy(name: str | None):
    """Layers made inside use the policy ``name``; None keeps the global one."""
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def base_config(model: keras.Model) -> dict:
    """What every model's ``get_config`` starts from: name, trainable and the dtype policy. Not
    ``super().get_config()``: for a functional model that is the whole layer graph, which the
    constructor does not take (keras-hub's backbones skip it for the same reason)."""
    return {"name": model.name, "trainable": model.trainable, "dtype": model.dtype_policy.name}
