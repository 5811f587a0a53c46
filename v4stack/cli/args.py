"""Command-line argument checks shared by every subcommand (``generate`` today, ``serve`` next).

Each factory returns an argparse ``type=`` callable: it turns the text into a value with the shared checks
of ``v4stack.config.validation`` and raises ``argparse.ArgumentTypeError`` otherwise, so a bad value is
refused while the arguments are parsed, before any weights load. :class:`OneLineParser` prints that error
as one line, ``v4stack generate: error: --temperature: 'nan' is not allowed (expected a finite number >= 0)``,
and exits with code 2 (``exit_codes.USAGE``).

Knows: argparse and the shared checks. Does not know: models or the engine.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from v4stack.cli.exit_codes import USAGE
from v4stack.config import validation as check

SEED_MIN, SEED_MAX = -(1 << 63), (1 << 64) - 1  # what torch.Generator.manual_seed accepts


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block) and exit code 2."""

    def error(self, message: str) -> None:  # argparse's hook: must not return
        message = message.removeprefix("argument ")
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _typed(name: str, convert: Callable[[str], object]) -> Callable[[str], object]:
    def parse(text: str):
        try:
            return convert(text)
        except check.ParameterError as exc:
            raise argparse.ArgumentTypeError(exc.detail) from None
    parse.__name__ = name  # argparse names the type in some messages
    return parse


def int_arg(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi]."""
    return _typed("integer", lambda t: check.parse_int("value", t, lo, hi))


def float_arg(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
              hi_open: bool = False) -> Callable[[str], float]:
    """A finite float in [lo, hi] (open ends as flagged); NaN and infinities are refused."""
    return _typed("number", lambda t: check.parse_float("value", t, lo, hi, lo_open=lo_open, hi_open=hi_open))


def text_arg() -> Callable[[str], str]:
    """Text that is valid UTF-8 (argv bytes that are not UTF-8 are refused with their position)."""
    return _typed("text", lambda t: check.text("value", t))


def seed_arg() -> Callable[[str], int]:
    """A sampling seed: any integer torch's generators take."""
    return int_arg(SEED_MIN, SEED_MAX)


def print_error(command: str, exc: BaseException) -> None:
    """The one-line error every subcommand prints: ``v4stack CMD: error: MESSAGE``."""
    message = " ".join(str(exc).split()) or type(exc).__name__   # newlines inside a message: still one line
    if isinstance(exc, OSError) and exc.filename and exc.strerror:  # not "[Errno 2] ...: 'PATH'"
        message = f"{exc.filename}: {exc.strerror}"
    print(f"v4stack {command}: error: {message}", file=sys.stderr)
