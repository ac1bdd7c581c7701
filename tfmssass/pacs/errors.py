"""What can go wrong with a PACS, apart from the code that talks to it, so that the command line can
name these errors without importing the DICOMweb and DICOM-object libraries for every run."""

from __future__ import annotations

from tfmssass.core.errors import TfmssassError


class PacsError(TfmssassError):
    """One line for the user; ``exit_code`` 1: the PACS failed, 2: our setup is wrong."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message, code)

    @property
    def code(self) -> int:
        return self.exit_code


class PacsUnavailable(PacsError):
    """The PACS did not answer after every retry: what is done is kept, ``--resume`` continues."""
