"""User-facing errors.

Anything the user can fix (a typo in a prompt, a missing file, a model that is not downloaded) is raised as a
:class:`DreamcanvasError`. The CLI prints its message as one line on stderr and exits non-zero, without a
traceback; everything else is a bug and keeps its traceback.
"""


class DreamcanvasError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""

    exit_code = 2


class PromptSyntaxError(DreamcanvasError, ValueError):
    """A prompt string that does not follow ``text[:weight[:stop]] | ...``."""


class ModelUnavailableError(DreamcanvasError):
    """Weights are neither cached nor downloadable right now."""


class CorruptWeightsError(DreamcanvasError):
    """A weights file exists but is truncated or does not match its checksum."""


class DreamcanvasWarning(UserWarning):
    """Something the user should know but that does not stop the run (e.g. an offline fallback)."""
