"""Image operations in pure TensorFlow, shared by training pipelines and inference.

One 2×3 affine matrix (source pixels → output pixels, pixel-index coordinates) moves an image
and its points together. The warp runs in TF ops so the same code can later run inside an
exported SavedModel; it anti-aliases (area-like resize) before sampling whenever it shrinks the
image a lot, so that a whole 3000-px radiograph is not aliased into a 256-px input.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def clahe(image, clip_limit: float = 2.0, tile_grid_size=(8, 8)):
    """Contrast-limited adaptive histogram equalisation in TF ops, matching OpenCV's CLAHE.

    ``image``: grey uint8 [H, W], [H, W, 1], [B, H, W] or [B, H, W, 1]; returns uint8 of the same
    shape. As ``cv2.createCLAHE(clip_limit, tile_grid_size).apply``: tile histograms (the image is
    reflect-padded to whole tiles when it does not divide, as OpenCV does), clipping with
    redistribution of the excess, and a bilinear blend of the four nearest tiles' mappings.
    ``tile_grid_size`` is (columns, rows), OpenCV's order.
    """
    image = tf.convert_to_tensor(image)
    rank = image.shape.rank
    if rank not in (2, 3, 4):
        raise ValueError("clahe expects [H, W], [H, W, 1], [B, H, W] or [B, H, W, 1]")
    channel = rank == 4 or (rank == 3 and image.shape[-1] == 1)
    batched = rank == 4 or (rank == 3 and not channel)
    x = image[..., 0] if channel else image
    x = x if batched else x[None]
    out = _clahe_batch(tf.cast(x, tf.int32), float(clip_limit), int(tile_grid_size[0]),
                       int(tile_grid_size[1]))
    out = out if batched else out[0]
    return out[..., None] if channel else out


def clahe_float(x, clip_limit: float = 2.0, tile_grid_size=(8, 8)):
    """CLAHE on a float image in [0, 1], through 8 bits as OpenCV would see it."""
    grey = tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)
    return tf.cast(clahe(grey, clip_limit, tile_grid_size), tf.float32) / 255.0


@dataclass(frozen=True)
class IntensityJitter:
    """One image's random intensity change, each draw named (tensors or floats)."""

    gamma: object
    contrast: object
    brightness: object  # added after contrast
    noise: object  # standard deviation of the Gaussian noise
    noise_seed: object  # [2] int64, stateless seed of the noise image

    @classmethod
    def from_uniforms(cls, uniforms, noise_seed, gamma, contrast, brightness: float, noise: float):
        """From 4 uniforms in [0, 1) and the ranges: (low, high) for gamma and contrast, ± for
        brightness, up to ``noise`` for the noise level."""
        return cls(gamma=gamma[0] + (gamma[1] - gamma[0]) * uniforms[0],
                   contrast=contrast[0] + (contrast[1] - contrast[0]) * uniforms[1],
                   brightness=(uniforms[2] * 2 - 1) * brightness, noise=noise * uniforms[3], noise_seed=noise_seed)


def jitter_intensity(x, jitter: IntensityJitter):
    """Gamma, contrast and brightness, then Gaussian noise. Stateless: the same draws give the
    same image."""
    x = (tf.pow(tf.clip_by_value(x, 0.0, 1.0), jitter.gamma) - 0.5) * jitter.contrast + 0.5 + jitter.brightness
    x += tf.random.stateless_normal(tf.shape(x), seed=jitter.noise_seed) * jitter.noise
    return tf.clip_by_value(x, 0.0, 1.0)


def _clahe_batch(x, clip_limit, tiles_x, tiles_y):
    bins = 256
    shape = tf.shape(x)
    batch, height, width = shape[0], shape[1], shape[2]
    divisible = tf.logical_and(tf.equal(height % tiles_y, 0), tf.equal(width % tiles_x, 0))
    pad_y = tf.where(divisible, 0, tiles_y - height % tiles_y)
    pad_x = tf.where(divisible, 0, tiles_x - width % tiles_x)
    padded = tf.pad(x, [[0, 0], [0, pad_y], [0, pad_x]], mode="REFLECT")  # = BORDER_REFLECT_101
    tile_h = (height + pad_y) // tiles_y
    tile_w = (width + pad_x) // tiles_x
    tile_area = tile_h * tile_w

    tiles = tf.reshape(padded, [batch, tiles_y, tile_h, tiles_x, tile_w])
    tiles = tf.reshape(tf.transpose(tiles, [0, 1, 3, 2, 4]), [-1, tile_area])
    hist = tf.math.bincount(tiles, minlength=bins, maxlength=bins, axis=-1)  # [B*ty*tx, 256]

    if clip_limit > 0:
        limit = tf.maximum(tf.cast(clip_limit * tf.cast(tile_area, tf.float32) / bins, tf.int32), 1)
        excess = tf.reduce_sum(tf.maximum(hist - limit, 0), axis=-1, keepdims=True)
        hist = tf.minimum(hist, limit) + excess // bins
        residual = excess % bins
        step = tf.maximum(bins // tf.maximum(residual, 1), 1)
        index = tf.range(bins)[None, :]
        hist += tf.cast((index % step == 0) & (index // step < residual), tf.int32)

    scale = (bins - 1) / tf.cast(tile_area, tf.float32)
    lut = tf.clip_by_value(tf.round(tf.cast(tf.cumsum(hist, axis=-1), tf.float32) * scale), 0, 255)
    lut = tf.reshape(lut, [-1])  # index: ((b * tiles_y + ty) * tiles_x + tx) * 256 + value

    def coords(size, tile, count):
        pos = tf.cast(tf.range(size), tf.float32) / tf.cast(tile, tf.float32) - 0.5
        first = tf.floor(pos)
        weight = pos - first
        first = tf.cast(first, tf.int32)
        return tf.maximum(first, 0), tf.minimum(first + 1, count - 1), weight

    y1, y2, wy = coords(height, tile_h, tiles_y)
    x1, x2, wx = coords(width, tile_w, tiles_x)
    base = tf.reshape(tf.range(batch) * tiles_y * tiles_x, [-1, 1, 1])

    def look(ty, tx):
        tile_index = base + ty[None, :, None] * tiles_x + tx[None, None, :]
        return tf.gather(lut, tile_index * bins + x)

    wy, wx = wy[None, :, None], wx[None, None, :]
    top = look(y1, x1) * (1 - wx) + look(y1, x2) * wx
    bottom = look(y2, x1) * (1 - wx) + look(y2, x2) * wx
    blended = top * (1 - wy) + bottom * wy
    return tf.cast(tf.clip_by_value(tf.round(blended), 0, 255), tf.uint8)


def canonical_matrix(centre, anterior, cranial, size: int, extent: float, flip_vertical=False,
                     angle=0.0, zoom=1.0, shift=(0.0, 0.0)):
    """TF twin of :func:`tfmssass.core.geometry.level_frame` (square crop), plus augmentation.

    Anterior to +x, cranial up, optionally flipped vertically (``_sup`` corners); ``angle``
    (radians) turns the crop about the disk centre, ``zoom`` scales, ``shift`` moves the crop by a
    fraction of its size. With the defaults it equals ``level_frame``.
    """
    c = tf.cast(centre, tf.float32)
    a = tf.cast(anterior, tf.float32)
    along = a - c
    depth = tf.norm(along)
    u = along / depth
    cos, sin = tf.cos(tf.cast(angle, tf.float32)), tf.sin(tf.cast(angle, tf.float32))
    u = tf.stack([cos * u[0] - sin * u[1], sin * u[0] + cos * u[1]])
    v = tf.stack([-u[1], u[0]])
    v = tf.where(tf.reduce_sum(v * tf.cast(cranial, tf.float32)) > 0, -v, v)
    v = tf.where(tf.cast(flip_vertical, tf.bool), -v, v)
    scale = float(size) / (extent * depth) * tf.cast(zoom, tf.float32)
    rows = tf.stack([u, v]) * scale
    target = (float(size) - 1.0) / 2.0 + tf.cast(tf.stack(shift), tf.float32) * float(size)
    return tf.concat([rows, (target - tf.linalg.matvec(rows, c))[:, None]], axis=1)


def shrink_to_long_side(image, long_side: int):
    """Area-resize [H, W] so the long side is at most ``long_side``; returns (image, (sx, sy))."""
    image = tf.convert_to_tensor(image, tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    factor = tf.minimum(1.0, float(long_side) / tf.reduce_max(shape))
    size = tf.maximum(tf.cast(tf.round(shape * factor), tf.int32), 1)
    small = tf.cond(factor < 1.0, lambda: tf.image.resize(image[..., None], size, method="area")[..., 0],
                    lambda: image)
    scale = tf.cast(tf.shape(small)[:2], tf.float32) / shape
    return small, tf.stack([scale[1], scale[0]])


def quarter_turn_matrix(turns, height, width):
    """Affine [2, 3] taking pixel coordinates of an [H, W] image to those of the same image turned
    ``turns`` × 90° counter-clockwise (``tf.image.rot90`` / ``np.rot90``); pixel centres are integers."""
    w, h = tf.cast(width, tf.float32) - 1.0, tf.cast(height, tf.float32) - 1.0
    zero, one = tf.zeros([]), tf.ones([])
    matrices = tf.stack([
        tf.stack([tf.stack([one, zero, zero]), tf.stack([zero, one, zero])]),
        tf.stack([tf.stack([zero, one, zero]), tf.stack([-one, zero, w])]),
        tf.stack([tf.stack([-one, zero, w]), tf.stack([zero, -one, h])]),
        tf.stack([tf.stack([zero, -one, h]), tf.stack([one, zero, zero])]),
    ])
    return tf.gather(matrices, tf.math.floormod(tf.cast(turns, tf.int32), 4))
