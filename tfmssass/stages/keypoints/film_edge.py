"""Which levels of a chain lie on the film: a film cut off above or below the levels mSASSS grades.

Stage 1 always answers 12 points. On a film cut off at a level, the levels that are not on it are
still placed somewhere: mostly piled at the film's edge over the first level that is there, with
confidences up to 0.9, sometimes thrown back up the spine. So an off-film level cannot be told by
its confidence; it is told by where it would have to be.

The walk starts from the anchor: the neighbouring pair of confident levels deepest inside the film
(their step not collapsed). From there it goes outwards level by level, each time continuing the
last step: a level is off the film when the place one step further lies within :data:`EDGE` steps
of the film's edge, when the level's own centre lies within :data:`OWN` steps of it (its corners
cannot both be on the film), or when it sits on its inner neighbour (a step under :data:`COLLAPSE`)
within :data:`NEAR` steps of the edge. Every level beyond an off-film level is off too. Such levels
are blank, never guessed; the plausibility gate then judges the levels that are left.

The limits were chosen on the demo's stage-1 points on cut films apart from the benchmark's
(synthetic cuts of seed 520, seed-210 films cut by hand between two disks): the rules compared are in
``bench/RESULTS.md`` ("Films cut off at a level are read"); ``bench/cut_films.py`` measures a model.
"""

from __future__ import annotations

import tensorflow as tf

#: All in steps (the distance between the last two disk centres walked): the next place at least this far
#: inside the film, a level's own centre at least this far, a step at least this long near the edge, and
#: what "near the edge" is.
EDGE = 0.25
OWN = 0.5
COLLAPSE = 0.5
NEAR = 1.0


def _inside(points, height, width):
    """How far each point [..., 2] (x, y in pixels) lies inside the film; negative outside."""
    x, y = points[..., 0], points[..., 1]
    return tf.minimum(tf.minimum(x, y), tf.minimum(width - 1.0 - x, height - 1.0 - y))


def levels_on_film(centres, confident, height, width):
    """[6] bool: the levels whose disk centres ``centres`` [6, 2] (pixels of a film ``height`` x
    ``width``) lie on the film; ``confident`` [6] the levels whose points stage 1 is sure of. All
    levels count as on the film when no pair of neighbours can anchor the walk."""
    centres = tf.convert_to_tensor(centres, tf.float32)
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    steps = tf.norm(centres[1:] - centres[:-1], axis=1)
    inside = _inside(centres, height, width)
    usable = (steps >= COLLAPSE * _median(steps)) & confident[1:] & confident[:-1]
    depth = tf.where(usable, tf.minimum(inside[1:], inside[:-1]), -1e9)
    anchor = tf.argmax(depth, output_type=tf.int32)
    on = [tf.constant(True)] * 6
    for outward in (-1, 1):
        # from the anchor pair outwards: levels anchor-1 .. 0, then anchor+2 .. 5
        inner, outer = (anchor, anchor + 1) if outward < 0 else (anchor + 1, anchor)
        step = tf.gather(centres, inner) - tf.gather(centres, outer)
        still_on = tf.constant(True)
        for j in (range(4, -1, -1) if outward < 0 else range(1, 6)):
            walked = anchor - 1 >= j if outward < 0 else anchor + 2 <= j
            previous = centres[j - outward]
            length = tf.maximum(tf.norm(step), 1e-6)
            beyond = _inside(previous + step, height, width) < EDGE * length
            at_edge = inside[j] < OWN * length
            piled = (tf.norm(centres[j] - previous) < COLLAPSE * length) & (inside[j] < NEAR * length)
            this_on = still_on & ~(beyond | at_edge | piled)
            on[j] = tf.where(walked, this_on, on[j])
            still_on = tf.where(walked, this_on, still_on)
            step = tf.where(walked & this_on, centres[j] - previous, step)
    return tf.where(tf.reduce_max(depth) > -1e9, tf.stack(on), tf.ones([6], tf.bool))


def _median(values):
    """The median of a short 1-D tensor (the lower middle value for an even count)."""
    ordered = tf.sort(values)
    return ordered[(tf.size(values) - 1) // 2]
