"""Image operations in pure TensorFlow, shared by training pipelines and inference.

One 2×3 affine matrix (source pixels → output pixels, pixel-index coordinates) moves an image
and its points together. The warp runs in TF ops so the same code can later run inside an
exported SavedModel; it anti-aliases (area-like resize) before sampling whenever it shrinks the
image a lot, so that a whole 3000-px radiograph is not aliased into a 256-px input.
"""

from __future__ import annotations


import tensorflow as tf

#: Below this scale (output px per source px) the warp first resizes with anti-aliasing.
_PRESHRINK_BELOW = 0.75


def region_matrix(box, out_size, angle=0.0, zoom=1.0, flip=False, shift=(0.0, 0.0)):
    """Affine [2, 3] that fits ``box`` (x0, y0, x1, y1) into ``out_size`` (height, width).

    The whole box stays visible (letterboxed), optionally rotated by ``angle`` (radians) about
    its centre, zoomed, mirrored left-right (``flip``) and shifted by a fraction of the output.
    """
    box = tf.cast(tf.convert_to_tensor(box), tf.float32)
    height, width = float(out_size[0]), float(out_size[1])
    centre = tf.stack([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    scale = tf.minimum(width / tf.maximum(box[2] - box[0], 1.0),
                       height / tf.maximum(box[3] - box[1], 1.0)) * tf.cast(zoom, tf.float32)
    angle = tf.cast(angle, tf.float32)
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    mirror = tf.where(tf.cast(flip, tf.bool), -1.0, 1.0)
    linear = tf.stack([tf.stack([mirror * cos, -mirror * sin]), tf.stack([sin, cos])])
    target = tf.stack([(width - 1) / 2.0 + tf.cast(shift[0], tf.float32) * width,
                       (height - 1) / 2.0 + tf.cast(shift[1], tf.float32) * height])
    translation = target - tf.linalg.matvec(linear, centre)
    return tf.concat([linear, translation[:, None]], axis=1)


def apply_matrix(matrix, points):
    """Points [..., 2] through an affine [2, 3]."""
    matrix = tf.cast(matrix, tf.float32)
    points = tf.cast(points, tf.float32)
    return tf.linalg.matvec(matrix[:, :2], points) + matrix[:, 2]


def invert_matrix(matrix):
    matrix = tf.cast(matrix, tf.float32)
    inv = tf.linalg.inv(matrix[:, :2])
    return tf.concat([inv, -tf.linalg.matvec(inv, matrix[:, 2])[:, None]], axis=1)


def warp(image, matrix, out_size):
    """Resample a grey image [H, W] (float) through ``matrix`` into ``out_size``; outside is 0."""
    image = tf.cast(image, tf.float32)
    matrix = tf.cast(matrix, tf.float32)
    scale = tf.sqrt(tf.abs(tf.linalg.det(matrix[:, :2])))
    shape = tf.cast(tf.shape(image)[:2], tf.float32)

    def shrink():
        factor = scale / _PRESHRINK_BELOW
        size = tf.maximum(tf.cast(tf.round(shape * factor), tf.int32), 1)
        small = tf.image.resize(image[..., None], size, method="area")[..., 0]
        fy, fx = tf.unstack(tf.cast(size, tf.float32) / shape)
        # source px → small px: x_s = (x + 0.5) * f - 0.5; fold its inverse into the matrix
        linear = matrix[:, :2] / tf.stack([fx, fy])[None, :]
        translation = matrix[:, 2] + tf.linalg.matvec(matrix[:, :2], tf.stack(
            [0.5 / fx - 0.5, 0.5 / fy - 0.5]))
        return small, tf.concat([linear, translation[:, None]], axis=1)

    image, matrix = tf.cond(scale < _PRESHRINK_BELOW, shrink, lambda: (image, matrix))
    inverse = invert_matrix(matrix)  # output px → source px, as the TF op wants it
    transform = tf.concat([tf.reshape(inverse, [6]), tf.zeros([2])], axis=0)[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None, :, :, None], transforms=transform,
        output_shape=tf.constant(out_size, tf.int32), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[0, :, :, 0]


