"""Which way up a film was stored, and whether it is a lateral spine film at all: a small network on a
thumbnail of the whole radiograph.

Exports hold films stored turned a quarter, half or three quarters; stage 1, trained on upright
films, still finds a chain of points on them and would attach grades to the wrong corners. So
before detection a classifier tells how many quarter turns counter-clockwise (``np.rot90``) the
stored film is from upright; stage 1 reads the film turned back and its points are mapped back to
the stored pixels. Mirroring is not a class: a lateral film mirrored is a lateral film of a patient
facing the other way, which stage 1 reads as it is. A fifth class, :data:`NOT_LATERAL`, is every film
that is not a lateral cervical or lumbar radiograph (AP views, thoracic spine, chest), learnt from the
negatives of the prepared data (``tfmssass prepare --negatives``); a run trained without negatives
has four classes and does not check it.

The labels come free: any labelled film is upright or a quarter turn of it (its chain of disk
centres says which), and training turns and mirrors it at random. It learns from the prepared
radiograph shards, so it trains in minutes after stage 1, from the same data (``train
keypoints`` ends with it; ``tfmssass train orientation`` adds it to an earlier stage-1 run).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tfmssass.core.atomic import write_text
from tfmssass.data.tfrecords import NEGATIVE_VIEW, RADIOGRAPHS, load_index, parse_radiograph, read_records

#: Side of the square thumbnail the classifier sees (the whole film, letterboxed).
THUMBNAIL = 192
WEIGHTS = "orientation.weights.h5"
SUMMARY = "orientation.json"
#: The class of films that are not lateral cervical or lumbar radiographs (after the four quarter turns).
NOT_LATERAL = 4


def thumbnail(image):
    """[H, W] in [0, 1] → [THUMBNAIL, THUMBNAIL, 1], the whole film letterboxed (turns commute with it)."""
    return tf.image.resize_with_pad(tf.convert_to_tensor(image, tf.float32)[..., None], THUMBNAIL, THUMBNAIL,
                                    antialias=True)


def build_orientation_model(classes: int = 5) -> keras.Model:
    """Six strided conv blocks and a softmax over 0, 1, 2, 3 quarter turns and (``classes`` 5) not a
    lateral spine film (about 0.2 M weights)."""
    inputs = keras.Input((THUMBNAIL, THUMBNAIL, 1), name="thumbnail")
    x = inputs
    for filters in (16, 32, 48, 64, 96, 128):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.GroupNormalization(groups=8)(x)  # no batch statistics: trained and served alike
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(classes, activation="softmax", dtype="float32", name="quarter_turns")(x)
    return keras.Model(inputs, outputs, name="orientation")


def stored_turns(points):
    """Quarter turns counter-clockwise of a labelled film from upright, from its chain of disk centres
    (cranial → caudal runs down the film when upright); [24, 2] points, NaN where unlabelled."""
    points = tf.convert_to_tensor(points, tf.float32)
    centres = tf.reshape(points, [2, 6, 2, 2])[:, :, 0]  # view, level, xy
    known = tf.reduce_all(tf.math.is_finite(centres), axis=-1)
    view = tf.argmax(tf.reduce_sum(tf.cast(known, tf.int32), axis=1), output_type=tf.int32)
    chain, valid = tf.gather(centres, view), tf.gather(known, view)
    index = tf.cast(tf.where(valid)[:, 0], tf.int32)
    run = tf.gather(chain, index[-1]) - tf.gather(chain, index[0])
    # a turn of k quarters counter-clockwise takes "down" (0, 1) to (1, 0), (0, -1), (-1, 0)
    angle = tf.math.atan2(run[0], run[1])  # 0 down, +pi/2 right, ±pi up, -pi/2 left
    return tf.math.floormod(tf.cast(tf.round(angle / (np.pi / 2)), tf.int32), 4)


#: Training films are cut at random: up to this share of each side (top, bottom, left, right), each
#: side with probability CUT_PROBABILITY, as films cut off above or below the graded levels are.
CUT_SHARE, CUT_PROBABILITY = (0.35, 0.35, 0.15, 0.15), 0.3


def _cut(image, seed_pair):
    """The film with its sides cut off at random (:data:`CUT_SHARE`)."""
    shape = tf.cast(tf.shape(image), tf.float32)
    share = tf.random.stateless_uniform([4], seed_pair + 3) * tf.constant(CUT_SHARE)
    share = tf.where(tf.random.stateless_uniform([4], seed_pair + 4) < CUT_PROBABILITY, share, 0.0)
    top, bottom = tf.cast(share[0] * shape[0], tf.int32), tf.cast((1.0 - share[1]) * shape[0], tf.int32)
    left, right = tf.cast(share[2] * shape[1], tf.int32), tf.cast((1.0 - share[3]) * shape[1], tf.int32)
    return image[top:bottom, left:right]


def is_negative(points, weights):
    """A prepared negative: every point known absent (``tfmssass prepare --negatives``)."""
    return tf.reduce_all(weights > 0) & ~tf.reduce_any(tf.math.is_finite(points))


def _has_chain(points, weights):
    """Whether a record can teach the classifier: a negative, or a film with two disk centres labelled."""
    centres = tf.reshape(points, [2, 6, 2, 2])[:, :, 0]
    known = tf.reduce_sum(tf.cast(tf.reduce_all(tf.math.is_finite(centres), -1), tf.int32), axis=1)
    return is_negative(points, weights) | (tf.reduce_max(known) >= 2)


def _example(image, points, weights, seed_pair):
    """One training thumbnail cut, turned and mirrored at random, and its label (quarter turns, or
    :data:`NOT_LATERAL` for a negative)."""
    image = _cut(image, seed_pair)
    extra = tf.random.stateless_uniform([], seed_pair, 0, 4, dtype=tf.int32)
    mirror = tf.random.stateless_uniform([], seed_pair + 1) < 0.5
    negative = is_negative(points, weights)
    turns = tf.cond(negative, lambda: tf.constant(0), lambda: stored_turns(points))
    label = tf.math.floormod(turns + extra, 4)
    x = tf.image.rot90(thumbnail(image), extra)
    x = tf.where(mirror, x[:, ::-1], x)
    label = tf.where(mirror, tf.math.floormod(-label, 4), label)  # a mirror swaps a left turn for a right one
    label = tf.where(negative, NOT_LATERAL, label)
    gain = tf.random.stateless_uniform([], seed_pair + 2, 0.7, 1.3)
    return tf.clip_by_value(x * gain, 0.0, 1.0), label


def orientation_dataset(data_dir, split: str, batch_size: int, seed: int, repeat: bool) -> tf.data.Dataset:
    """Thumbnails and labels from the prepared radiograph shards (``tfmssass prepare``)."""
    records = read_records(data_dir, RADIOGRAPHS, split, repeat=repeat, seed=seed)
    records = records.map(parse_radiograph, num_parallel_calls=tf.data.AUTOTUNE).filter(
        lambda image, points, weights: _has_chain(points, weights))
    records = tf.data.Dataset.zip((records, tf.data.Dataset.random(seed=seed).batch(2)))
    ds = records.map(lambda r, s: _example(*r, tf.cast(s, tf.int32) % (1 << 30)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(2)


def has_negatives(data_dir) -> bool:
    """Whether the prepared data holds negatives to learn :data:`NOT_LATERAL` from."""
    return load_index(data_dir)["splits"]["train"]["views"].get(NEGATIVE_VIEW, 0) > 0


def train_orientation(data_dir, run_dir, epochs: int = 40, steps_per_epoch: int = 60, batch_size: int = 16,
                      seed: int = 0, verbose: int = 1) -> dict:
    """Train the classifier into ``RUN/orientation.weights.h5``; its validation accuracy (every film
    of the validation split cut, turned and mirrored at random) goes into ``RUN/orientation.json``."""
    keras.utils.set_random_seed(seed)
    classes = 5 if has_negatives(data_dir) else 4
    model = build_orientation_model(classes)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    train = orientation_dataset(data_dir, "train", batch_size, seed, repeat=True)
    model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose)
    val = orientation_dataset(data_dir, "val", batch_size, seed + 1, repeat=False)
    _, accuracy = model.evaluate(val, verbose=0)
    run = Path(run_dir)
    tmp = run / f".{WEIGHTS}.{os.getpid()}.weights.h5"  # written whole, then renamed (Keras insists on the suffix)
    model.save_weights(str(tmp))
    os.replace(tmp, run / WEIGHTS)
    summary = {"validation_accuracy": round(float(accuracy), 4), "epochs": epochs,
               "steps_per_epoch": steps_per_epoch, "thumbnail": THUMBNAIL, "classes": classes}
    write_text(run / SUMMARY, json.dumps(summary, indent=1) + "\n")
    return summary


def load_orientation(run_dir) -> keras.Model | None:
    """The classifier of a stage-1 run, or None for a run trained without one."""
    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        return None
    summary = Path(run_dir) / SUMMARY
    classes = json.loads(summary.read_text()).get("classes", 4) if summary.is_file() else 4
    model = build_orientation_model(classes)
    model.load_weights(str(path))
    return model
