"""Entry point of the ``v4stack`` command: parses arguments and dispatches to a subcommand module.

No input produces a traceback: argparse errors and expected errors print one line and exit with the codes of
``v4stack.cli.exit_codes`` (README "Exit codes"); an unexpected exception prints one line and a hint to set
``V4STACK_DEBUG=1``, which re-raises it with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from v4stack import __version__, envs
from v4stack.cli import exit_codes
from v4stack.cli.args import OneLineParser, print_error
from v4stack.platforms.threads import apply_thread_choice

SUBCOMMAND_MODULES = ("generate", "check_golden", "make_checkpoint", "check_chat", "serve")
OPTIONAL_SUBCOMMANDS = ("plan",)  # optional at import time: their absence must not break generation


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = OneLineParser(prog="v4stack", description="DeepSeek-V4 inference stack",
                           epilog="exit codes: 0 ok, 1 check failed / plan does not fit / internal error, "
                                  "2 usage or parameter error, 3 data missing or unreadable, 130 interrupted")
    parser.add_argument("--version", action="version", version=f"v4stack {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"v4stack.cli.{name}").add_parser(sub)
    for name in OPTIONAL_SUBCOMMANDS:
        try:
            module = importlib.import_module(f"v4stack.cli.{name}")
        except ImportError:
            continue
        module.add_parser(sub)
    return parser


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace | None, int]:
    """(args, 0), or (None, exit code) when argparse exits (--help, --version: 0; a bad argument: 2)."""
    try:
        return build_parser().parse_args(argv), exit_codes.OK
    except SystemExit as stop:
        code = stop.code
        return None, code if isinstance(code, int) else (exit_codes.OK if code is None else exit_codes.USAGE)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (never raises, unless V4STACK_DEBUG=1)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args, code = _parse(argv)
    if args is None:
        return code
    command = args.command
    debug = False
    try:
        debug = envs.debug()
        envs.library_defaults()  # validated here: a bad value is a one-line error (import v4stack skipped it)
        apply_thread_choice()  # V4STACK_THREADS, else the cores the load average leaves free
        return int(args.func(args) or 0)
    except BaseException as exc:  # noqa: BLE001 - every error becomes one line and an exit code
        if isinstance(exc, SystemExit):
            raise
        code = exit_codes.exit_code_for(exc)
        if debug:
            raise
        if code == exit_codes.INTERRUPTED:
            print(f"v4stack {command}: interrupted", file=sys.stderr)
            return code
        if code is None:
            print_error(command, f"unexpected {type(exc).__name__}: {exc} (set V4STACK_DEBUG=1 for the traceback)")
            return exit_codes.FAILED
        print_error(command, exc)
        return code


if __name__ == "__main__":
    sys.exit(main())
