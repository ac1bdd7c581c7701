"""One answer per disk space about a bridge: a total bony bridge (grade 3) spans the disk, so
its two corners are 3 together or not at all.

Rule: the disk is bridged when the mean of its two corners' P(grade 3) exceeds 0.5; then both
corners are 3. Otherwise each corner takes its most likely grade among 0-2. Averaging lets a
confident corner carry a doubtful partner. The threshold keeps "bridged" the majority reading
of the two crops, the way a reader decides from the whole disk.
"""

from __future__ import annotations

import numpy as np


def consistent_grades(p_inf: np.ndarray, p_sup: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities [N, 4] of the two corners of N disks → (grade_inf, grade_sup, disagreed).

    ``disagreed`` marks disks whose raw arg-max grades disagreed about the bridge (a reason for
    review).
    """
    p_inf, p_sup = np.asarray(p_inf, float), np.asarray(p_sup, float)
    bridged = (p_inf[:, 3] + p_sup[:, 3]) / 2.0 > 0.5
    inf = np.where(bridged, 3, p_inf[:, :3].argmax(axis=1))
    sup = np.where(bridged, 3, p_sup[:, :3].argmax(axis=1))
    disagreed = (p_inf.argmax(axis=1) == 3) != (p_sup.argmax(axis=1) == 3)
    return inf, sup, disagreed
