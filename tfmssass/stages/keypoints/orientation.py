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
from keras import layers, ops

from tfmssass.core.atomic import write_text
from tfmssass.data.tfrecords import NEGATIVE_VIEW, RADIOGRAPHS, load_index, parse_radiograph, read_records

#: Side of the square thumbnail the classifier sees (the whole film, letterboxed).
THUMBNAIL = 192
WEIGHTS = "orientation.weights.h5"
SUMMARY = "orientation.json"
#: The class of films that are not lateral cervical or lumbar radiographs (after the four quarter turns).
NOT_LATERAL = 4
#: Below this probability of its most likely turn a film's orientation is not trusted.
ORIENTATION_THRESHOLD = 0.9
#: A mirrored film's class for each class of the film: a mirror's left turn is the film's right.
MIRRORED = (0, 3, 2, 1, 4)


def with_mirror(p, p_mirrored):
    """Class probabilities [..., classes] of a film averaged with its mirror's, mapped back."""
    classes = p.shape[-1]  # 4, or 5 with the not-lateral class
    return (p + tf.gather(p_mirrored, list(MIRRORED[:classes]), axis=-1)) / 2.0


def thumbnail(image):
    """[H, W] in [0, 1] → [THUMBNAIL, THUMBNAIL, 1], the whole film letterboxed (turns commute with it)."""
    return tf.image.resize_with_pad(tf.convert_to_tensor(image, tf.float32)[..., None], THUMBNAIL, THUMBNAIL,
                                    antialias=True)


class Standardize(layers.Layer):
    """Each thumbnail to zero mean and unit spread: a raw ("for processing") film and a processed one
    of the same patient differ mostly in contrast, which should not decide the turn."""

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        spread = ops.std(x, axis=(1, 2, 3), keepdims=True)
        return (x - mean) / (spread + 1e-3)


#: Adam's step: at 2e-3 network 2 collapsed to a uniform answer in its first epoch.
LEARNING_RATE = 5e-4
#: The classifier's design, recorded in ``orientation.json`` so an older run's weights load into theirs.
NETWORK = 2


def build_orientation_model(classes: int = 5, network: int = NETWORK) -> keras.Model:
    """A softmax over 0, 1, 2, 3 quarter turns and (``classes`` 5) not a lateral spine film.

    ``network`` 2 (1.24 M weights): six stages of two convolutions on the standardized thumbnail,
    then the 3 x 3 map flattened, so the head knows *where* things are (a pelvis below, ribs above)
    and not only what is there: the global average of network 1 (0.2 M) could not tell a lumbar film
    upright from upside down (about half right on radiograph-style phantoms)."""
    inputs = keras.Input((THUMBNAIL, THUMBNAIL, 1), name="thumbnail")
    x = inputs
    if network == 1:
        widths, convs = (16, 32, 48, 64, 96, 128), 1
    else:
        x = Standardize()(x)
        widths, convs = (16, 32, 64, 96, 128, 192), 2
    for filters in widths:
        for conv in range(convs):
            x = layers.Conv2D(filters, 3, strides=2 if conv == 0 else 1, padding="same", use_bias=False)(x)
            x = layers.GroupNormalization(groups=8)(x)  # no batch statistics: trained and served alike
            x = layers.ReLU()(x)
    if network == 1:
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(0.2)(x)
    else:
        x = layers.Flatten()(x)
        x = layers.Dropout(0.3)(x)
        x = layers.Dense(128, activation="relu")(x)
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
#: side with probability CUT_PROBABILITY, as films cut off above or below the graded levels are (up to
#: half the spine: a film cut 3 of its 6 levels off loses about 45% of its height).
CUT_SHARE, CUT_PROBABILITY = (0.45, 0.45, 0.15, 0.15), 0.4


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


#: Films are kept in memory shrunk to this long side, in 8 bits (about 0.1 MB a film; the trained
#: classifier's answers on the validation films are the same as from floats): enough for a thumbnail
#: of any cut of them, and decoding the prepared films once instead of at every draw makes an epoch
#: several times faster.
CACHE_SIDE = 2 * THUMBNAIL


def _shrink(image, points, weights):
    """The film shrunk to :data:`CACHE_SIDE` on its long side in 8 bits, its points with it."""
    shape = tf.cast(tf.shape(image), tf.float32)
    scale = tf.minimum(1.0, CACHE_SIDE / tf.reduce_max(shape))
    size = tf.cast(tf.round(shape * scale), tf.int32)
    small = tf.image.resize(image[..., None], size, antialias=True)[..., 0]
    return tf.cast(tf.round(tf.clip_by_value(small, 0.0, 1.0) * 255.0), tf.uint8), points * scale, weights


def _unpack(small, points, weights):
    return tf.cast(small, tf.float32) / 255.0, points, weights


def orientation_dataset(data_dir, split: str, batch_size: int, seed: int, repeat: bool) -> tf.data.Dataset:
    """Thumbnails and labels from the prepared radiograph shards (``tfmssass prepare``)."""
    records = read_records(data_dir, RADIOGRAPHS, split, repeat=False)
    records = records.map(parse_radiograph, num_parallel_calls=tf.data.AUTOTUNE).filter(
        lambda image, points, weights: _has_chain(points, weights))
    records = records.map(_shrink, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if repeat:
        records = records.shuffle(4096, seed=seed, reshuffle_each_iteration=True).repeat()
    records = records.map(_unpack, num_parallel_calls=tf.data.AUTOTUNE)
    records = tf.data.Dataset.zip((records, tf.data.Dataset.random(seed=seed).batch(2)))
    ds = records.map(lambda r, s: _example(*r, tf.cast(s, tf.int32) % (1 << 30)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(2)


def has_negatives(data_dir) -> bool:
    """Whether the prepared data holds negatives to learn :data:`NOT_LATERAL` from."""
    return load_index(data_dir)["splits"]["train"]["views"].get(NEGATIVE_VIEW, 0) > 0


def sure_and_right(model, thumbnails, labels) -> float:
    """Share of films the classifier gets right as scoring asks it (the film and its mirror averaged): a
    lateral film's turn right with probability at least :data:`ORIENTATION_THRESHOLD` (else scoring
    refuses it as "orientation unsure"), a film that is no lateral spine called so."""
    p = with_mirror(model(thumbnails, training=False), model(thumbnails[:, :, ::-1], training=False)).numpy()
    turn_p = p[:, :4]
    lateral = labels < NOT_LATERAL
    right_turn = (turn_p.argmax(axis=1) == labels) & (turn_p.max(axis=1) >= ORIENTATION_THRESHOLD)
    if p.shape[1] > NOT_LATERAL:
        right_turn &= p.argmax(axis=1) != NOT_LATERAL
        right = np.where(lateral, right_turn, p.argmax(axis=1) == NOT_LATERAL)
    else:
        right = right_turn[lateral]
    return float(np.mean(right)) if right.size else float("nan")


class _KeepBest(keras.callbacks.Callback):
    """After each epoch, :func:`sure_and_right` on fixed validation thumbnails; the best epoch's weights
    (-1: those it started from) are put back at the end: the last epoch's confidence swings from one
    epoch to the next."""

    def __init__(self, thumbnails, labels):
        super().__init__()
        self.thumbnails, self.labels = thumbnails, labels
        self.best, self.best_epoch, self.weights = -1.0, -1, None

    def on_train_begin(self, logs=None):
        self.on_epoch_end(-1)  # the weights it starts from (fine-tuning) are a candidate too

    def on_epoch_end(self, epoch, logs=None):
        score = sure_and_right(self.model, self.thumbnails, self.labels)
        if logs is not None:
            logs["val_sure_and_right"] = score
        if score > self.best:
            self.best, self.best_epoch, self.weights = score, epoch, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.weights is not None:
            self.model.set_weights(self.weights)


def train_orientation(data_dir, run_dir, epochs: int = 40, steps_per_epoch: int = 60, batch_size: int = 16,
                      seed: int = 0, verbose: int = 1, init=None) -> dict:
    """Train the classifier into ``RUN/orientation.weights.h5``, keeping the epoch with the most
    validation films sure and right (:func:`sure_and_right`; every film of the validation split cut,
    turned and mirrored at random, the same draws each epoch); that share and the plain accuracy
    go into ``RUN/orientation.json``. ``init``: an earlier stage-1 run folder whose classifier (of the
    same classes) is fine-tuned."""
    keras.utils.set_random_seed(seed)
    classes = 5 if has_negatives(data_dir) else 4
    model = build_orientation_model(classes)
    if init is not None:
        earlier = load_orientation(init)
        if earlier is None or earlier.output_shape[-1] != classes or classifier_about(init)["network"] != NETWORK:
            raise ValueError(f"{init}: no orientation classifier of {classes} classes and network {NETWORK} "
                             "to start from")
        model.set_weights(earlier.get_weights())
    model.compile(keras.optimizers.Adam(LEARNING_RATE), "sparse_categorical_crossentropy", metrics=["accuracy"])
    val = orientation_dataset(data_dir, "val", batch_size, seed + 1, repeat=False)
    batches = list(val.as_numpy_iterator())
    thumbnails, labels = (np.concatenate([b[i] for b in batches]) for i in (0, 1))
    keep = _KeepBest(thumbnails, labels)
    train = orientation_dataset(data_dir, "train", batch_size, seed, repeat=True)
    model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose, callbacks=[keep])
    accuracy = float(np.mean(model.predict(thumbnails, verbose=0).argmax(axis=1) == labels))
    run = Path(run_dir)
    tmp = run / f".{WEIGHTS}.{os.getpid()}.weights.h5"  # written whole, then renamed (Keras insists on the suffix)
    model.save_weights(str(tmp))
    os.replace(tmp, run / WEIGHTS)
    summary = {"validation_accuracy": round(accuracy, 4), "validation_sure_and_right": round(keep.best, 4),
               "best_epoch": keep.best_epoch, "validation_films": int(len(labels)), "epochs": epochs,
               "steps_per_epoch": steps_per_epoch, "thumbnail": THUMBNAIL, "classes": classes,
               "network": NETWORK}
    if init is not None:
        summary["init"] = str(Path(init).resolve())
    write_text(run / SUMMARY, json.dumps(summary, indent=1) + "\n")
    return summary


def classifier_about(run_dir) -> dict:
    """A stage-1 run's ``orientation.json`` with its classes and network filled in for runs from before
    they were recorded (4 classes; network 1)."""
    summary = Path(run_dir) / SUMMARY
    about = json.loads(summary.read_text()) if summary.is_file() else {}
    return {**about, "classes": about.get("classes", 4), "network": about.get("network", 1)}


def load_orientation(run_dir) -> keras.Model | None:
    """The classifier of a stage-1 run, or None for a run trained without one."""
    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        return None
    about = classifier_about(run_dir)
    model = build_orientation_model(about["classes"], about["network"])
    model.load_weights(str(path))
    return model
