"""What ``tfmssass score`` was asked to do, as one object: the command line's options, checked once
for combinations that cannot work (each a :class:`~tfmssass.core.errors.UsageError`, exit 2), and turned
into the :class:`~tfmssass.scoring.settings.Settings` a run keeps."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from tfmssass.core.config import DEFAULT_IMPUTE, DEFAULT_PRIOR
from tfmssass.core.errors import UsageError
from tfmssass.scoring.cohort import PRIOR_CHOICES, read_prior_file
from tfmssass.scoring.longitudinal import DECREASE_COST
from tfmssass.scoring.run import salt_id
from tfmssass.scoring.settings import Settings

#: The salt of --pseudonymize must be at least this long (a short one is guessed from the hashes).
MIN_SALT = 8


@dataclass
class ScoreOptions:
    out: str
    directory: str | None = None
    # where the model comes from: one of these (none: the shipped demo)
    model_dir: str | None = None
    keypoints_run: str | None = None
    grader_run: str | None = None
    server: str | None = None
    grpc_target: str | None = None
    model_name: str | None = None
    # what the results are
    view: str | None = None
    meta_csv: str | None = None
    impute: str = DEFAULT_IMPUTE
    review_threshold: float = 0.6
    prior: str | tuple | None = None  # None: tempered, or data for a model that does not say its prior
    longitudinal: str = "monotone"
    decrease_cost: float | None = None
    batch_size: int = 64
    # the folder and the run
    resume: bool = False
    overwrite: bool = False
    pseudonymize: bool = False
    salt: str | None = None
    salt_file: str | None = None
    quiet: bool = False
    dicom_out: bool = False
    # a PACS instead of a folder
    dicomweb_url: str | None = None
    study_uids: tuple = ()
    patient_ids: tuple = ()
    since: str | None = None
    auth_file: str | None = None
    ca_bundle: str | None = None
    send: bool = False

    def check(self) -> None:
        """Refuse what cannot work together, before anything is read or loaded; reads --prior FILE and
        the salt file."""
        self._check_source()
        if self.pseudonymize and (self.dicom_out or self.dicomweb_url):
            raise UsageError("--pseudonymize cannot be used with --dicom or --dicomweb: the DICOM objects must "
                             "reference the original radiographs")
        if self.prior is not None and self.prior not in PRIOR_CHOICES and isinstance(self.prior, str):
            try:
                self.prior = read_prior_file(self.prior)
            except OSError as exc:
                raise UsageError(f"--prior {self.prior}: not tempered, data, uniform or em, and not a readable file "
                                 f"({exc.strerror})") from None
        if self.decrease_cost is not None and self.longitudinal != "soft":
            raise UsageError("--decrease-cost only makes sense with --longitudinal soft")
        if self.resume and self.overwrite:
            raise UsageError("--resume keeps a run's results and --overwrite removes them: give one")
        if self.pseudonymize:
            if bool(self.salt) == bool(self.salt_file):
                raise UsageError("--pseudonymize needs exactly one of --salt or --salt-file")
            self.salt = self.salt or Path(self.salt_file).read_text().strip()
            if len(self.salt) < MIN_SALT:
                raise UsageError(f"the pseudonymisation salt must have at least {MIN_SALT} characters")
        elif self.salt or self.salt_file:
            raise UsageError("--salt/--salt-file only make sense with --pseudonymize")

    def _check_source(self) -> None:
        """A folder or a PACS, not both, and the options of the one given."""
        pacs_only = {"--study": self.study_uids, "--patient": self.patient_ids, "--since": self.since,
                     "--auth-file": self.auth_file, "--ca-bundle": self.ca_bundle, "--store": self.send}
        if not self.dicomweb_url:
            if self.directory is None:
                raise UsageError("give a DIRECTORY to score, or --dicomweb URL")
            if given := [name for name, value in pacs_only.items() if value]:
                raise UsageError(f"{', '.join(given)} only make sense with --dicomweb")
            return
        if self.directory is not None:
            raise UsageError("give a DIRECTORY or --dicomweb, not both")
        if self.meta_csv:
            raise UsageError("--meta does not apply to --dicomweb: the DICOM headers name patient and date")
        if self.since:
            try:
                dt.date.fromisoformat(self.since)
            except ValueError:
                raise UsageError(f"--since {self.since}: not a date YYYY-MM-DD") from None
        if not (self.study_uids or self.patient_ids or self.since):
            raise UsageError("--dicomweb needs --study, --patient or --since (which studies to score)")

    @property
    def model_source(self) -> dict:
        """The arguments of :func:`tfmssass.serving.predictors.open_predictor`."""
        return {"model_dir": self.model_dir, "keypoints_run": self.keypoints_run, "grader_run": self.grader_run,
                "server": self.server, "grpc_target": self.grpc_target, "model_name": self.model_name,
                "batch_size": self.batch_size, "review_threshold": self.review_threshold}

    def settings(self, models: str, phantom: bool, metadata: dict, fingerprint: str = "") -> Settings:
        """The run's settings once the model is known; a prior other than the training cohort's needs a
        model that says which prior its probabilities assume (without one, the default is ``data``)."""
        states_prior = not metadata or "calibration" in metadata  # a server's answers carry it
        prior = self.prior if self.prior is not None else DEFAULT_PRIOR if states_prior else "data"
        if prior != "data" and not states_prior:
            shown = self.prior if isinstance(self.prior, str) else "FILE"
            raise UsageError(f"--prior {shown}: {models} was exported before calibration and does not say what "
                             "prior its probabilities assume; export it again")
        return Settings(models=models, phantom=phantom, view=self.view, impute=self.impute,
                        review_threshold=self.review_threshold, salt_id=salt_id(self.salt) if self.salt else None,
                        prior=prior, longitudinal=self.longitudinal,
                        decrease_cost=self.decrease_cost or DECREASE_COST, model_fingerprint=fingerprint)
