"""One base class for the errors a user is told about: each carries its exit code, and the command
line prints it as one line (``error: …``) in one place (:func:`tfmssass.cli.main`).

Exit codes (docs/outputs.md): 0 everything done; 1 some inputs or a service failed (the rest is
written; ``--resume`` continues); 2 the command line or the setup is wrong, nothing was done.
"""

from __future__ import annotations


class TfmssassError(Exception):
    """A one-line message for the user; ``exit_code`` says how the command ends."""

    exit_code = 1

    def __init__(self, message: str = "", exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(TfmssassError):
    """The command line or the folders it names cannot be used as given (exit 2)."""

    exit_code = 2
