"""``v4stack plan``: say what fits and how fast before launch.

Registers the ``plan`` subcommand (``add_parser``) and runs it (``run``); the top-level CLI wires
``add_parser`` into its subparsers.  Output is text by default, ``--json`` for machines, and
``--plot FILE.png`` adds a TPOT-versus-context chart for several chips.
"""

from __future__ import annotations

import argparse
import sys

from v4stack.hardware.registry import list_chips
from v4stack.planner.memory import ENGRAM_PLACEMENTS, KV_DTYPES, QUANTS
from v4stack.planner.model_shape import PRESETS
from v4stack.planner.plan import DEFAULT_CONTEXT, make_plan, parse_tokens
from v4stack.planner.report import DEFAULT_PLOT_CHIPS, format_plan, plot_tpot_vs_context


def add_parser(subparsers) -> None:
    """Register ``plan`` on an argparse subparsers object (``set_defaults(func=run)``)."""
    p = subparsers.add_parser(
        "plan", help="memory fit and latency estimate before launch",
        description="Plan a DeepSeek-V4/V4.1 deployment: memory per device, max context, TTFT/TPOT.")
    p.add_argument("--model", required=True, help=f"{', '.join(PRESETS)} or PATH/config.json")
    p.add_argument("--hardware", required=True, help=f"one of: {', '.join(list_chips())}")
    p.add_argument("--devices", type=int, required=True, help="number of chips (cards)")
    p.add_argument("--tp", type=int, help="attention tensor parallel (default devices/dp)")
    p.add_argument("--dp", type=int, help="attention data parallel (default 1)")
    p.add_argument("--ep", type=int, help="expert parallel (default devices; 1 = TP-sliced experts)")
    p.add_argument("--context", type=parse_tokens, default=DEFAULT_CONTEXT, help="context tokens, e.g. 64K, 1M")
    p.add_argument("--concurrency", type=int, default=1, help="concurrent sequences")
    p.add_argument("--kv-dtype", choices=KV_DTYPES, help="KV format (default fp8 for V4, fp4 for V4.1)")
    p.add_argument("--engram", choices=ENGRAM_PLACEMENTS, default="device", help="V4.1 Engram table placement")
    p.add_argument("--quant", choices=QUANTS, help="weight format (default native FP8/FP4, or w8a8 without FP8)")
    p.add_argument("--spec-tokens", type=int, default=0, help="speculative tokens per step (MTP/DSpark)")
    p.add_argument("--acceptance", type=float, help="mean tokens emitted per speculative step")
    p.add_argument("--draft", choices=("auto", "mtp", "dspark"), default="auto", help="draft head kind")
    p.add_argument("--prompt", type=parse_tokens, help="prompt tokens for TTFT (default: --context)")
    p.add_argument("--output-tokens", type=parse_tokens, default=0,
                   help="output tokens per request; adds other requests' prefill time to TPOT")
    p.add_argument("--arrival", choices=("steady", "burst"), default="steady",
                   help="steady closed loop, or all requests arriving at once")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="also draw TPOT vs context for several chips")
    p.add_argument("--plot-chips", default=",".join(DEFAULT_PLOT_CHIPS), help="comma-separated chips for --plot")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``plan``; returns a process exit code (0 ok, 2 bad arguments)."""
    kw = dict(tp=args.tp, dp=args.dp, ep=args.ep, kv_dtype=args.kv_dtype, engram=args.engram,
              quant=args.quant, spec_tokens=args.spec_tokens, acceptance=args.acceptance, draft=args.draft)
    try:
        plan = make_plan(args.model, args.hardware, args.devices, context=args.context,
                         concurrency=args.concurrency, prompt=args.prompt, output_tokens=args.output_tokens,
                         arrival=args.arrival, **kw)
        if args.plot:
            chips = [c for c in args.plot_chips.split(",") if c]
            kw.pop("quant")       # each chip gets its own default weight format
            plot_tpot_vs_context(args.plot, args.model, args.devices, chips, concurrency=args.concurrency, **kw)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        print(f"v4stack plan: error: {e}", file=sys.stderr)
        return 2
    print(plan.to_json() if args.json else format_plan(plan))
    if args.plot:
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
