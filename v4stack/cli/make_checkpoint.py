"""``v4stack make-checkpoint OUT``: write a small random checkpoint in the official layout."""

from __future__ import annotations

import json
from pathlib import Path

from v4stack.testing.checkpoint_writer import tiny_config, write_checkpoint


def add_parser(sub) -> None:
    p = sub.add_parser("make-checkpoint", help="write a random checkpoint in the official DeepSeek-V4 layout")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a config field, e.g. --set hidden_size=256 --set 'compress_ratios=[0,4,0]'")
    p.set_defaults(func=run)


def run(args) -> int:
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        parsed = json.loads(value)
        overrides[key] = tuple(parsed) if isinstance(parsed, list) else parsed
    cfg = tiny_config(**overrides)
    write_checkpoint(args.out, cfg, seed=args.seed, num_shards=args.shards)
    print(f"wrote {args.out}")
    return 0
