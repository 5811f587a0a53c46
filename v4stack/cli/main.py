"""Entry point of the ``v4stack`` command: parses arguments and dispatches to a subcommand module."""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from v4stack import __version__, envs
from v4stack.cli import check_chat, check_golden, generate, make_checkpoint, serve

SUBCOMMANDS = [generate, check_golden, make_checkpoint, check_chat, serve]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="v4stack", description="DeepSeek-V4 inference stack")
    parser.add_argument("--version", action="version", version=f"v4stack {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    try:
        from v4stack.cli import plan
    except ImportError:  # the planner is optional at import time; its absence must not break generation
        plan = None
    if plan is not None:
        plan.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    threads = envs.num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # config/checkpoint/user errors: message, no traceback
        print(f"v4stack {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
