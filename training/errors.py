"""Errors the training CLIs report as one line on stderr (exit status 2), not a traceback."""

from __future__ import annotations

from coda_model.checkpoint import CheckpointError
from coda_model.tokenizer import TokenizerError


class UsageError(ValueError):
    """Bad input or an unusable environment, with what to do about it."""


# Everything a user can cause by a wrong path, flag or machine; anything else is a bug.
ONE_LINE = (UsageError, CheckpointError, TokenizerError)
