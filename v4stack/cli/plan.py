"""``v4stack plan``: say what fits and how fast before launch.

Registers the ``plan`` subcommand (``add_parser``) and runs it (``run``); the top-level CLI wires
``add_parser`` into its subparsers.  Output is text by default, ``--json`` for machines, and
``--plot FILE.png`` adds a TPOT-versus-context chart for several chips. Exit status 0 when the deployment
fits, 1 when it does not (the verdict names the binding constraint and the smallest device count that
fits; no latency figures are printed), 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import sys

from pathlib import Path

from v4stack.cli.args import float_arg, int_arg
from v4stack.cli.exit_codes import FAILED, OK
from v4stack.config import validation as check
from v4stack.hardware.registry import get_chip, list_chips
from v4stack.planner.memory import ENGRAM_PLACEMENTS, KV_DTYPES, PREFILL_CHUNK, QUANTS
from v4stack.planner.model_shape import PRESETS, load_model
from v4stack.planner.plan import DEFAULT_CONTEXT, make_plan, parse_tokens
from v4stack.planner.report import DEFAULT_PLOT_CHIPS, format_plan, plot_tpot_vs_context


def _tokens_arg(minimum: int):
    """A token count (8192, 64K, 1M) of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            return check.integer("value", parse_tokens(text, "value"), minimum)
        except check.ParameterError:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed (expected a token count >= {minimum}, "
                                             f"such as 8192, 64K or 1M)") from None
    parse.__name__ = "tokens"
    return parse


def _model_arg(text: str) -> str:
    """A preset name, or a config.json (or the directory holding one) that exists."""
    if text in PRESETS:
        return text
    path = Path(text)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return str(path)
    raise argparse.ArgumentTypeError(f"{text!r} is not allowed (expected one of {', '.join(PRESETS)}, or the "
                                     f"path of a config.json)")


def _chips_arg(text: str) -> tuple[str, ...]:
    chips = tuple(c.strip() for c in text.split(",") if c.strip())
    if not chips:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed (expected comma-separated chips)")
    return tuple(_hardware_arg(c) for c in chips)


def _hardware_arg(text: str) -> str:
    try:
        get_chip(text)
    except KeyError:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed (expected one of {', '.join(list_chips())})") \
            from None
    return text


def add_parser(subparsers) -> None:
    """Register ``plan`` on an argparse subparsers object (``set_defaults(func=run)``)."""
    p = subparsers.add_parser(
        "plan", help="memory fit and latency estimate before launch",
        description="Plan a DeepSeek-V4/V4.1 deployment: memory per device, max context, TTFT/TPOT.")
    p.add_argument("--model", type=_model_arg, required=True, help=f"{', '.join(PRESETS)} or PATH/config.json")
    p.add_argument("--hardware", type=_hardware_arg, required=True, help=f"one of: {', '.join(list_chips())}")
    p.add_argument("--devices", type=int_arg(1), required=True, help="number of chips (cards), >= 1")
    p.add_argument("--tp", type=int_arg(1), help="attention tensor parallel (default devices/dp)")
    p.add_argument("--dp", type=int_arg(1), help="attention data parallel (default 1)")
    p.add_argument("--ep", type=int_arg(1), help="expert parallel (default devices; 1 = TP-sliced experts)")
    p.add_argument("--context", type=_tokens_arg(1), default=DEFAULT_CONTEXT,
                   help=f"context tokens, e.g. 64K, 1M (default {DEFAULT_CONTEXT}; at most the model's "
                        "max_position_embeddings)")
    p.add_argument("--concurrency", type=int_arg(1), default=1, help="concurrent sequences (default 1)")
    p.add_argument("--kv-dtype", choices=KV_DTYPES, help="KV format (default fp8 for V4, fp4 for V4.1)")
    p.add_argument("--engram", choices=ENGRAM_PLACEMENTS, default="device",
                   help="V4.1 Engram table placement (default device)")
    p.add_argument("--quant", choices=QUANTS, help="weight format (default native FP8/FP4, or w8a8 without FP8)")
    p.add_argument("--spec-tokens", type=int_arg(0), default=0,
                   help="speculative tokens per step (MTP/DSpark; default 0)")
    p.add_argument("--acceptance", type=float_arg(1.0),
                   help="mean tokens emitted per speculative step, in [1, spec-tokens + 1]")
    p.add_argument("--draft", choices=("auto", "mtp", "dspark"), default="auto", help="draft head kind (default auto)")
    p.add_argument("--prompt", type=_tokens_arg(1), help="prompt tokens for TTFT (default: --context)")
    p.add_argument("--output-tokens", type=_tokens_arg(0), default=0,
                   help="output tokens per request; adds other requests' prefill time to TPOT (default 0)")
    p.add_argument("--arrival", choices=("steady", "burst"), default="steady",
                   help="steady closed loop (default), or all requests arriving at once")
    p.add_argument("--chunk", type=_tokens_arg(1), default=PREFILL_CHUNK,
                   help=f"prefill chunk the activation workspace is sized for, the engine's "
                        f"--max-num-batched-tokens (default {PREFILL_CHUNK})")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="also draw TPOT vs context for several chips")
    p.add_argument("--plot-chips", type=_chips_arg, default=DEFAULT_PLOT_CHIPS,
                   help=f"comma-separated chips for --plot (default {','.join(DEFAULT_PLOT_CHIPS)})")
    p.set_defaults(func=run)


def _check_against_model(args: argparse.Namespace) -> None:
    """Flag-named one-line errors for values that depend on the model or on each other."""
    limit = load_model(args.model).max_position or None
    name = args.model if args.model in PRESETS else "the model"
    for flag, value in (("--context", args.context), ("--prompt", args.prompt)):
        if value is not None and limit is not None and value > limit:
            raise check.ParameterError(flag, value, f"<= {limit:,}, {name}'s maximum context "
                                                    f"(max_position_embeddings)")
    if args.acceptance is not None and args.acceptance > args.spec_tokens + 1:
        raise check.ParameterError("--acceptance", args.acceptance,
                                   f"<= --spec-tokens + 1 = {args.spec_tokens + 1} (tokens emitted per step)")


def run(args: argparse.Namespace) -> int:
    """Execute ``plan``; returns a process exit code (0 fits, 1 does not fit; errors raise and ``main``
    maps them: 2 bad arguments, 3 unreadable config)."""
    _check_against_model(args)
    kw = dict(tp=args.tp, dp=args.dp, ep=args.ep, kv_dtype=args.kv_dtype, engram=args.engram,
              quant=args.quant, spec_tokens=args.spec_tokens, acceptance=args.acceptance, draft=args.draft)
    try:
        plan = make_plan(args.model, args.hardware, args.devices, context=args.context,
                         concurrency=args.concurrency, prompt=args.prompt, output_tokens=args.output_tokens,
                         arrival=args.arrival, chunk=args.chunk, **kw)
        if args.plot:
            chips = list(args.plot_chips)
            kw.pop("quant")       # each chip gets its own default weight format
            plot_tpot_vs_context(args.plot, args.model, args.devices, chips, concurrency=args.concurrency, **kw)
    except RuntimeError as e:    # matplotlib missing: a usage error (install it or drop --plot)
        raise ValueError(str(e)) from None
    print(plan.to_json() if args.json else format_plan(plan))
    if args.plot:
        print(f"wrote {args.plot}", file=sys.stderr)
    return OK if plan.fits else FAILED
