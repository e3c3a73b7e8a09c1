"""Errors the training CLIs report as one line on stderr (exit status 2), not a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from coda_model.checkpoint import CheckpointError
from coda_model.tokenizer import TokenizerError


class UsageError(ValueError):
    """Bad input or an unusable environment, with what to do about it."""


# Everything a user can cause by a wrong path, flag or machine; anything else is a bug.
ONE_LINE = (UsageError, CheckpointError, TokenizerError)


def main_guarded(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 run: Callable[[argparse.Namespace], int]) -> int:
    """Set up logging and run a CLI: a user's mistake is one line and exit 2 (-v: traceback)."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except ONE_LINE as exc:
        if args.verbose:
            raise
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
