"""One error hierarchy for everything a user can cause.

The CLI turns any :class:`RealsrError` into a single red line and exit code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class RealsrError(Exception):
    """Base of every error caused by input, configuration or the environment (not by a bug)."""


class InputError(RealsrError):
    """An input file or folder that cannot be used: missing, unreadable, undecodable, unsupported."""


class ManifestError(RealsrError):
    """A manifest that is missing, malformed, of the wrong stage or schema, or points outside its dataset."""


class ConfigError(RealsrError):
    """Options that contradict each other or the data (e.g. a scale that does not divide the HR size)."""


class OutputExistsError(RealsrError):
    """An output that would be overwritten without ``--overwrite``."""


class RegistrationError(Exception):
    """A pair that cannot be registered; the message is the reason written to the manifest.

    Not a :class:`RealsrError`: it fails one pair (a failed record), never the run. ``verification``: the
    verifier's record (:meth:`realsr_tools.verification.Verification.to_dict`) when it was the one to refuse;
    ``preview``: the path (relative to ``--out``) of the refused pair's preview, when one was written.
    """

    def __init__(self, message: str, *, verification: dict | None = None, preview: str | None = None):
        super().__init__(message)
        self.verification = verification
        self.preview = preview


class OutputLocationError(RealsrError):
    """The output folder cannot take the outputs: not a folder, read-only, no space left, or locked by another run.

    Never one item's failure: it stops the run (per-item handlers re-raise it).
    """
