"""The settings of a scoring run: everything that changes its results, kept in the scored folder so
that a resumed run uses the same (:meth:`tfmssass.scoring.folder.ScoredFolder.begin`)."""

from __future__ import annotations

from dataclasses import dataclass

from tfmssass.core.config import (
    DEFAULT_IMPUTE,
    DEFAULT_PRIOR,
    PHANTOM_WARNING,
    POINT_REVIEW,
    PRIOR_POWER,
    REVIEW_THRESHOLD,
)
from tfmssass.scoring.longitudinal import DECREASE_COST


@dataclass(frozen=True)
class Settings:
    """Everything that changes the results; a resumed run must use the same."""

    models: str  # what scored (run folders or model name), written into every output
    phantom: bool  # whether the models were trained on phantoms only
    view: str | None = None
    impute: str = DEFAULT_IMPUTE  # visits, mean or none (tfmssass.scoring.totals)
    review_threshold: float = REVIEW_THRESHOLD
    point_review: float = POINT_REVIEW
    salt_id: str | None = None  # a hash of the pseudonymisation salt (the salt itself is never written)
    prior: str | tuple = DEFAULT_PRIOR  # tempered, data, uniform, em, or four frequencies (tfmssass.scoring.cohort)
    longitudinal: str = "monotone"  # monotone, soft or off (tfmssass.scoring.longitudinal)
    decrease_cost: float = DECREASE_COST  # soft: the cost of a grade going down
    model_fingerprint: str = ""  # what the models' answers come from (serving.predictors.files_fingerprint)

    @classmethod
    def from_dict(cls, data: dict) -> "Settings":
        """As a scored folder keeps them; a run scored before longitudinal decoding keeps "off", and one
        scored before the prior was a setting keeps "data"."""
        prior = data.get("prior", "data")
        return cls(**{"longitudinal": "off", **data, "prior": tuple(prior) if isinstance(prior, list) else prior})

    @property
    def prior_text(self) -> str:
        if isinstance(self.prior, str):
            return {"tempered": "the training cohort's grade frequencies flattened (each to the power "
                                f"{PRIOR_POWER:g}, renormalised)",
                    "data": "the training cohort's grade frequencies", "uniform": "every grade equally likely",
                    "em": "the scored cohort's own grade frequencies (EM)"}[self.prior]
        return "grade frequencies " + ", ".join(f"{p:.3f}" for p in self.prior)

    @property
    def models_note(self) -> str:
        return f"{PHANTOM_WARNING} ({self.models})" if self.phantom else self.models
