"""The exit status of every ``v4stack`` command, and which error maps to which (README "Exit codes").

0 success; 1 a check failed, a plan does not fit, or an unexpected internal error; 2 a usage or parameter
error (argparse, :class:`ParameterError`, any other ``ValueError`` a subcommand raises about its inputs);
3 data missing or unreadable (a model, checkpoint, config, golden, chat or tiers file that is absent or
invalid);
130 interrupted (Ctrl-C, as a shell reports SIGINT: 128 + 2).
"""

from __future__ import annotations

import json

from v4stack.chat.golden import GoldenFileError
from v4stack.config.model_config import ConfigError
from v4stack.server.tiers import TiersFileError
from v4stack.weights.checkpoint import CheckpointError

OK = 0
FAILED = 1
USAGE = 2
DATA = 3
INTERRUPTED = 130

# Errors about files the user pointed at (checked before generic ValueError: most of them subclass it).
DATA_ERRORS = (ConfigError, CheckpointError, GoldenFileError, TiersFileError, json.JSONDecodeError,
               UnicodeDecodeError, OSError)


class DataMissingError(FileNotFoundError):
    """Input data that is not where the user said (or where v4stack looks by default); exit code 3."""


def exit_code_for(exc: BaseException) -> int | None:
    """The exit status for an expected error, or None for an unexpected one (a bug: one line plus a hint)."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, DATA_ERRORS):
        return DATA
    if isinstance(exc, ValueError):
        return USAGE
    return None
