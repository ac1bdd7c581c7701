"""Training configurations and named presets: the one place defaults live."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tfmssass.core.errors import UsageError
from tfmssass.core.geometry import DEFAULT_EXTENT, CropSpec

#: The shipped phantom demo model (an export), relative to the repository.
DEMO_MODEL = Path("saved_models") / "phantom-demo" / "1"


def demo_model_dir() -> Path:
    """The shipped demo model: beside the package (a source checkout) or under the working folder."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (base / DEMO_MODEL / "saved_model.pb").is_file():
            return base / DEMO_MODEL
    raise UsageError(f"the shipped demo model ({DEMO_MODEL}) was not found; run from the repository root "
                     "or name a model")

#: Missing-corner rules of the visit totals (tfmssass.scoring.totals): the corner's own grades at the
#: patient's other visits then the segment's mean, the segment's mean alone, or none imputed.
IMPUTE_CHOICES = ("visits", "mean", "none")
DEFAULT_IMPUTE = "visits"
#: ``score --prior``: the training cohort's grade frequencies flattened (tfmssass.scoring.cohort).
DEFAULT_PRIOR = "tempered"
#: ``--prior tempered``: the power the training cohort's grade frequencies are raised to (1: ``data``,
#: 0: ``uniform``). Chosen on 17 phantom cohorts and checked on 4 drawn after it (bench/RESULTS.md,
#: issue 29, fifteenth pass).
PRIOR_POWER = 0.5
#: When a scored corner asks for a human look (``score --review-threshold`` sets the first).
REVIEW_THRESHOLD = 0.6  # grade probability below this → review
POINT_REVIEW = 0.5  # key-point confidence below this → review
#: A corner whose calibrated probability of being gradable is below the model's gradable threshold is
#: "not gradable" (NG): no grade, missing in the totals. ``calibrate`` sets the threshold
#: (docs/models.md); 0.5 is that of models calibrated before it did, and of heads calibrated without
#: NG corners. A call within odds of 4 either side of the threshold (0.2-0.8 around 0.5) is
#: borderline → review.
GRADABLE_THRESHOLD = 0.5
GRADABILITY_REVIEW_ODDS = 4.0
#: How many visible corners left ungraded one hidden corner graded is worth avoiding: a grade on a
#: corner nobody can see enters the totals unseen, a visible corner called NG is imputed and shown.
#: ``calibrate`` turns it into the gradable threshold cost / (1 + cost) = 0.9 (a Bayes decision on
#: the calibrated probability).
HIDDEN_GRADED_COST = 9.0
#: Said by every output of models that learnt from phantoms only.
PHANTOM_WARNING = ("PHANTOM-TRAINED DEMO MODELS: trained on synthetic phantoms only; "
                   "not for clinical or research use")
#: The start of a stage-1 finding that is a skip, not a failure (the film is not one mSASSS scores).
SKIPPED = "skipped: "
#: Key-point confidence below which a level is not graded at all (stage 1's default; a run folder
#: and an export carry their own).
POINT_CONFIDENCE = 0.3
#: Smallest probability taken into a logarithm (calibration, longitudinal decoding).
PROBABILITY_FLOOR = 1e-7
#: DICOM modalities a lateral spine radiograph may come as: CR and DX from the detector; RG, OT and
#: SC for digitised films and secondary captures found in archives. A PACS query asks for the same.
RADIOGRAPH_MODALITIES = ("CR", "DX", "RG", "OT", "SC")
#: Inputs larger than this are not read (a radiograph, even uncompressed 16-bit at 60 megapixels, is
#: well under it).
MAX_FILE_BYTES = 1 << 30
#: A header declaring more pixels than this (rows × columns × frames) is refused before decoding: the
#: largest detectors and film digitisers give about 60 megapixels; 200 leaves room, and bounds what
#: one film can take in memory while it is decoded and graded.
MAX_PIXELS = 200_000_000
#: Memory of a scoring run: radiographs are read ahead only while the pixels being read and waiting
#: to be graded stay within :data:`READ_PIXELS`, and the ones read are graded as soon as they add up
#: to :data:`PENDING_PIXELS` (a film larger than either still goes through, alone): one large film is
#: decoded while another is graded, whatever the number of films (docs/inputs.md gives the peak memory
#: bench/memory.py measured).
READ_PIXELS = 150_000_000
PENDING_PIXELS = 100_000_000
#: Seconds one input may take to be read and decoded before it is given up (``failed``) and the run
#: goes on.
DECODE_SECONDS = 120


@dataclass(frozen=True)
class KeypointConfig:
    """Stage 1 (HRNet disk points). ``paper`` is Koo et al.: HRNet-W32, 256×192, Adam 1e-3, batch 32."""

    preset: str = "small"
    backbone: str = "w16"
    input_size: tuple[int, int] = (256, 192)  # height, width
    sigma: float = 3.0  # Gaussian target, heatmap pixels (wider = learnt sooner from scratch)
    foreground_weight: float = 100.0  # see WeightedHeatmapLoss
    epochs: int = 60
    batch_size: int = 16
    learning_rate: float = 1e-3
    val_fraction: float = 0.2
    seed: int = 0
    cache_long_side: int = 1024  # working size: the long side radiographs are prepared and detected at
    confidence_threshold: float = POINT_CONFIDENCE
    min_points: int = 6  # confident points of the view: a film cut 3 of its 6 levels off still shows a chain of 3
    steps_per_epoch: int | None = 100  # None: one pass over the training radiographs
    val_point_images: int = 48  # radiographs the per-epoch validation runs the detector on (whole and cut)
    augment: dict = field(default_factory=dict)  # overrides of KeypointAugment
    orientation_epochs: int = 40  # the orientation classifier, trained after the network (stages.keypoints.orientation)
    orientation_steps: int = 60
    eager: bool = False  # step eagerly: on a CPU, building HRNet's training graph takes as long as ~25 eager steps

    def to_dict(self) -> dict:
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "KeypointConfig":
        data = dict(data)
        data["input_size"] = tuple(data["input_size"])
        return cls(**data)


KEYPOINT_PRESETS: dict[str, KeypointConfig] = {
    "paper": KeypointConfig(preset="paper", backbone="w32", epochs=140, batch_size=32,
                            steps_per_epoch=None),
    "small": KeypointConfig(epochs=30),
    "tiny": KeypointConfig(preset="tiny", backbone="w8", input_size=(128, 96), sigma=1.5, epochs=2,
                           batch_size=4, cache_long_side=512, steps_per_epoch=2, orientation_epochs=1,
                           orientation_steps=4, eager=True),
}


def keypoint_config(preset: str = "small", **overrides) -> KeypointConfig:
    if preset not in KEYPOINT_PRESETS:
        raise ValueError(f"unknown preset {preset!r} (expected {', '.join(KEYPOINT_PRESETS)})")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(KEYPOINT_PRESETS[preset], **overrides)


@dataclass(frozen=True)
class GraderConfig:
    """Stage 2 (corner grader).

    ``paper`` is Koo et al.: ResNet152 at 224, Adam 1e-6, batch 3, grades down-sampled each epoch
    to the rarest grade's count, best epoch kept. ``small`` trains on a CPU: a small residual
    network at 192 px, Adam 1e-3, batch 32 (at 128 px, trained on the same films, it read
    half again as many grade-1 corners as 0: bench/RESULTS.md, issue 29's eleventh pass).
    """

    preset: str = "small"
    backbone: str = "tiny"
    input_size: int = 192
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    per_class: int | None = None  # samples per grade and epoch; default: the rarest grade's count
    val_fraction: float = 0.2
    seed: int = 0
    clahe: bool = True
    clahe_clip: float = 2.0
    extent: float = DEFAULT_EXTENT  # crop side in centre→anterior distances
    patch_depth_px: int = 96  # centre→anterior distance in patch pixels (resolution kept)
    augment: dict = field(default_factory=dict)  # overrides of CornerAugment
    gradability: bool = True  # the head that learns from NG labels whether a corner can be graded

    @property
    def crop(self) -> CropSpec:
        return CropSpec(self.input_size, self.extent, self.clahe, self.clahe_clip, self.patch_depth_px)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GraderConfig":
        return cls(**{"gradability": False, **data})  # a run from before the head has none


GRADER_PRESETS: dict[str, GraderConfig] = {
    "paper": GraderConfig(preset="paper", backbone="resnet152", input_size=224, epochs=10000,
                          batch_size=3, learning_rate=1e-6),
    "small": GraderConfig(),
    "tiny": GraderConfig(preset="tiny", backbone="tiny", input_size=64, epochs=2, batch_size=8,
                         patch_depth_px=48),
}


def grader_config(preset: str = "small", **overrides) -> GraderConfig:
    if preset not in GRADER_PRESETS:
        raise ValueError(f"unknown preset {preset!r} (expected {', '.join(GRADER_PRESETS)})")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(GRADER_PRESETS[preset], **overrides)
