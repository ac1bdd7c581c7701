"""HRNet sizes by name, kept apart from the network code (as keras-hub keeps its presets)."""

from __future__ import annotations

#: Named sizes. ``w32`` is the paper's network (about 28.5M parameters); ``w16``/``w8`` are small
#: versions for phantoms and tests (narrower, fewer modules and blocks, lighter stem).
HRNET_PRESETS: dict[str, dict] = {
    "w48": dict(width=48, stage_modules=(1, 4, 3), blocks=4, stem_width=64, stem_blocks=4),
    "w32": dict(width=32, stage_modules=(1, 4, 3), blocks=4, stem_width=64, stem_blocks=4),
    "w16": dict(width=16, stage_modules=(1, 2, 2), blocks=2, stem_width=32, stem_blocks=2),
    "w8": dict(width=8, stage_modules=(1, 1, 1), blocks=1, stem_width=16, stem_blocks=1),
}
PAPER_INPUT = (256, 192)  # height, width
