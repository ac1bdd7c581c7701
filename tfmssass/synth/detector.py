"""The image chain of the radiograph style: from line integrals to the values a DICOM file stores.

X-ray side: polychromatic attenuation (beam hardening makes thick paths attenuate less per mm),
the heel effect along the tube axis, scatter that grows with the patient's thickness (less behind a
grid), quantum noise from the photons that arrive, then the detector's blur (scintillator spread and a
little glare) and its electronic noise. Exposure errors: the automatic exposure control aims at a
detector dose behind the spine and misses by a factor.

Then one of several looks, as archives mix them:
- ``multiscale``: log, a Laplacian pyramid whose mid bands are boosted and whose coarsest band is
  flattened (the halos at strong edges come from this), an S-shaped LUT;
- ``unsharp``: log, unsharp masking at a few millimetres, a gradation curve;
- ``plain``: log and a window, little else;
- ``for_processing``: the raw log exposure a detector hands over before any of that (DX "for processing");
- ``film``: a film's H&D curve (limited density range, burned-out soft tissue), grain, and a scanner
  that digitised the optical density (a secondary capture, "digitised film").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Each look: manufacturer and model as the header states them, and how common it is.
LOOKS = {
    "multiscale": ("Phantom Imaging A", "DR multiscale", 0.35),
    "unsharp": ("Phantom Imaging B", "CR-style unsharp", 0.2),
    "plain": ("Phantom Imaging C", "DR basic", 0.15),
    "for_processing": ("Phantom Imaging A", "DR raw", 0.1),
    "film": ("Phantom Film Digitizer", "film scanner", 0.2),
}


@dataclass(frozen=True)
class Exposure:
    """One exposure and its processing."""

    photons: float  # mean photons per pixel behind the spine at the intended dose
    error: float  # exposure actually given / intended
    hardening: float  # beam hardening: attenuation A counts as A / (1 + hardening · A)
    scatter: float  # scatter-to-primary ratio behind the reference thickness
    grid: bool  # an antiscatter grid (less scatter; maybe lines)
    grid_lines: float  # 0 or the period of visible grid lines (px)
    heel: float  # relative intensity change from one end of the field to the other
    mtf_px: float  # detector blur (Gaussian sigma, px)
    electronic: float  # electronic noise in photons
    look: str
    kvp: float
    text: bool  # burned-in annotation besides the side marker

    @property
    def manufacturer(self) -> str:
        return LOOKS[self.look][0]

    @property
    def model(self) -> str:
        return LOOKS[self.look][1]


def draw_exposure(rng: np.random.Generator, view: str, noise_level: float, blur_mm: float, spacing: float,
                  looks: tuple[str, ...] | None = None) -> Exposure:
    """An exposure for ``view``: ``noise_level`` (the difficulty's) sets the photon count, ``blur_mm`` the
    detector's unsharpness."""
    names = looks or tuple(LOOKS)
    weights = np.array([LOOKS[n][2] for n in names])
    look = str(rng.choice(names, p=weights / weights.sum()))
    grid = bool(rng.random() < (0.5 if view == "cervical" else 0.85))
    error = float(math.exp(rng.normal(0, 0.25)))
    if rng.random() < 0.1:  # a real exposure error: the AEC missed or was not used
        error *= float(rng.choice([0.35, 0.5, 2.0, 3.0]))
    return Exposure(
        photons=float(0.35 / noise_level**2 * rng.uniform(0.8, 1.25)), error=error,
        hardening=float(rng.uniform(0.02, 0.05)),
        scatter=float(rng.uniform(0.3, 0.8) if grid else rng.uniform(1.0, 3.0)) * (0.6 if view == "cervical" else 1.0),
        grid=grid, grid_lines=float(rng.uniform(2.2, 4.5)) if grid and rng.random() < 0.3 else 0.0,
        heel=float(rng.uniform(0.05, 0.2)) * float(rng.choice([-1, 1])),
        mtf_px=float(blur_mm / spacing * 0.6), electronic=float(rng.uniform(0.5, 3.0)),
        look=look, kvp=float(rng.uniform(70, 85) if view == "cervical" else rng.uniform(85, 100)),
        text=bool(rng.random() < 0.6))


def hardened(attenuation, exp: Exposure):
    return attenuation / (1.0 + exp.hardening * np.maximum(attenuation, 0.0))


def photons_at(attenuation: np.ndarray | float, reference: float, exp: Exposure) -> np.ndarray | float:
    """Primary photons per pixel behind ``attenuation``, the AEC aiming ``exp.photons`` behind ``reference``."""
    return exp.photons * exp.error * np.exp(-(hardened(attenuation, exp) - hardened(reference, exp)))


def detect(attenuation: np.ndarray, reference: float, exp: Exposure, spacing: float,
           rng: np.random.Generator) -> np.ndarray:
    """Photons per pixel the detector reports: primary (with heel effect) + scatter, quantum noise,
    detector blur, glare and electronic noise."""
    h, w = attenuation.shape
    primary = photons_at(attenuation, reference, exp).astype(np.float32)
    primary *= (1 + exp.heel * (np.linspace(-0.5, 0.5, h, dtype=np.float32)))[:, None]
    small = cv2.resize(primary, (max(w // 16, 1), max(h // 16, 1)), interpolation=cv2.INTER_AREA)
    thick = cv2.resize(attenuation.astype(np.float32), (max(w // 16, 1), max(h // 16, 1)), interpolation=cv2.INTER_AREA)
    sigma = 40.0 / (spacing * 16)  # scatter spreads over centimetres
    spread = cv2.GaussianBlur(small, (0, 0), sigma)
    weight = np.clip(cv2.GaussianBlur(thick, (0, 0), sigma) / max(reference, 1e-3), 0, 2)
    scatter = cv2.resize(exp.scatter * spread * weight, (w, h), interpolation=cv2.INTER_LINEAR)
    signal = primary + scatter
    noisy = signal + np.sqrt(signal) * rng.standard_normal(signal.shape, dtype=np.float32)
    if exp.mtf_px >= 0.3:
        noisy = cv2.GaussianBlur(noisy, (0, 0), exp.mtf_px)
    glare = cv2.resize(cv2.GaussianBlur(cv2.resize(noisy, (max(w // 8, 1), max(h // 8, 1)),
                                                   interpolation=cv2.INTER_AREA), (0, 0), 3.0), (w, h))
    noisy = 0.95 * noisy + 0.05 * glare
    noisy += exp.electronic * rng.standard_normal(signal.shape, dtype=np.float32)
    if exp.grid_lines:  # an aliased grid: fine stripes across the image
        phase = 2 * math.pi * np.arange(w, dtype=np.float32) / exp.grid_lines
        noisy *= (1 - 0.04 * (0.5 + 0.5 * np.cos(phase)))[None, :]
    return np.maximum(noisy, 0.5)


def log_image(detected: np.ndarray, exp: Exposure) -> np.ndarray:
    """−ln of the detected exposure relative to the intended one: bone and thick tissue high."""
    return -np.log(detected / (exp.photons * exp.error)).astype(np.float32)


def _window_on(image: np.ndarray, mask: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """``image`` scaled so that the anatomy (``mask``) spans [0, 1] between two percentiles."""
    values = image[mask] if mask is not None and mask.any() else image
    sample = values[:: max(1, values.size // 200_000)]
    lo, hi = np.percentile(sample, [low, high])
    return (image - lo) / max(hi - lo, 1e-6)


def _pyramid_enhance(image: np.ndarray, gain: float, flatten: float, levels: int = 6) -> np.ndarray:
    """Multi-scale contrast enhancement: detail bands amplified with a compressive curve, the coarsest
    band flattened (latitude reduction). Strong edges overshoot: the halos of processed films."""
    gauss = [image]
    for _ in range(levels):
        gauss.append(cv2.pyrDown(gauss[-1]))
    out = gauss[-1] * flatten
    for k in range(levels - 1, -1, -1):
        up = cv2.pyrUp(out, dstsize=(gauss[k].shape[1], gauss[k].shape[0]))
        band = gauss[k] - cv2.pyrUp(gauss[k + 1], dstsize=(gauss[k].shape[1], gauss[k].shape[0]))
        boost = gain if 1 <= k <= 4 else 1.0
        scale = float(np.std(band[:: 4, :: 4])) + 1e-6
        band = scale * np.sign(band) * np.abs(band / scale) ** 0.8 * boost
        out = up + band
    return out


def _s_curve(x: np.ndarray, slope: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-slope * (x - 0.5)))


def equalize(log: np.ndarray, spacing: float, strength: float) -> np.ndarray:
    """Dynamic range compression: part of the large-scale variation (centimetres: the abdomen's
    thickness, the shoulders) taken out, as every console does before its detail processing."""
    h, w = log.shape
    small = cv2.resize(log, (max(w // 16, 1), max(h // 16, 1)), interpolation=cv2.INTER_AREA)
    broad = cv2.resize(cv2.GaussianBlur(small, (0, 0), 35.0 / (spacing * 16)), (w, h), interpolation=cv2.INTER_LINEAR)
    return log - strength * broad


def present(log: np.ndarray, exp: Exposure, anatomy_mask: np.ndarray, spacing: float,
            rng: np.random.Generator) -> np.ndarray:
    """A log image → the look's output in [0, 1] (bone bright), for the presentation looks and film
    (for film the value is optical density scaled: the caller stores it)."""
    if exp.look != "film":
        log = equalize(log, spacing, rng.uniform(0.5, 0.8))
    if exp.look == "multiscale":
        x = _pyramid_enhance(_window_on(log, anatomy_mask), gain=rng.uniform(1.4, 2.2), flatten=rng.uniform(0.2, 0.45))
        x = _s_curve(_window_on(x, anatomy_mask, 1, 99), rng.uniform(4, 7))
    elif exp.look == "unsharp":
        sigma = rng.uniform(2, 6) / max(exp.mtf_px, 0.5)
        x = _window_on(log, anatomy_mask)
        x = x + rng.uniform(0.6, 1.5) * (x - cv2.GaussianBlur(x, (0, 0), sigma))
        x = _s_curve(_window_on(x, anatomy_mask, 1, 99), rng.uniform(3, 6))
    elif exp.look == "plain":
        x = np.clip(_window_on(log, anatomy_mask, 1, 99.5), 0, 1) ** rng.uniform(0.8, 1.2)
    elif exp.look == "film":
        # H&D curve: optical density rises with exposure (= falls with log attenuation), between base+fog
        # and the film's maximum; bone is clear film (low density)
        speed = float(np.percentile(log[anatomy_mask] if anatomy_mask.any() else log, rng.uniform(40, 60)))
        density = 0.2 + 2.9 / (1 + np.exp(rng.uniform(1.5, 2.2) * (log - speed)))
        grain = cv2.GaussianBlur(rng.standard_normal(log.shape, dtype=np.float32), (0, 0), 0.8)
        density = density + rng.uniform(0.01, 0.03) * grain * np.sqrt(density)
        x = np.clip(1 - (density - 0.15) / 3.2, 0, 1)
    else:
        raise ValueError(exp.look)
    return np.clip(x, 0, 1).astype(np.float32)
