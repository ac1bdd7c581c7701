"""Training configurations and named presets: the one place defaults live."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class KeypointConfig:
    """Stage 1 (HRNet disk points). ``paper`` is Koo et al.: HRNet-W32, 256×192, Adam 1e-3, batch 32."""

    preset: str = "small"
    backbone: str = "w16"
    input_size: tuple[int, int] = (256, 192)  # height, width
    sigma: float = 2.0  # Gaussian target, heatmap pixels
    epochs: int = 60
    batch_size: int = 16
    learning_rate: float = 1e-3
    val_fraction: float = 0.2
    seed: int = 0
    cache_long_side: int = 1024
    confidence_threshold: float = 0.3
    min_points: int = 8
    steps_per_epoch: int | None = None  # default: one pass over the training radiographs
    val_point_images: int = 48  # radiographs the per-epoch detector error is measured on
    augment: dict = field(default_factory=dict)  # overrides of KeypointAugment

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
    "paper": KeypointConfig(preset="paper", backbone="w32", epochs=140, batch_size=32),
    "small": KeypointConfig(),
    "tiny": KeypointConfig(preset="tiny", backbone="w8", input_size=(128, 96), sigma=1.5, epochs=2,
                           batch_size=4, cache_long_side=512),
}


def keypoint_config(preset: str = "small", **overrides) -> KeypointConfig:
    if preset not in KEYPOINT_PRESETS:
        raise ValueError(f"unknown preset {preset!r} (expected {', '.join(KEYPOINT_PRESETS)})")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(KEYPOINT_PRESETS[preset], **overrides)
