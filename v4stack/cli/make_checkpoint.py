"""``v4stack make-checkpoint OUT``: write a small random checkpoint in the official layout.

``--set KEY=JSON`` overrides a field of the default tiny config (``modelio.writer.tiny_config``);
the result is parsed like a ``config.json`` (``ModelConfig.from_dict``), so an unknown key, a wrong type or an
inconsistent value is refused with a one-line error naming the key (exit code 2) before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from v4stack.cli.args import int_arg, seed_arg
from v4stack.config.model_config import ConfigError, ModelConfig
from v4stack.modelio.writer import tiny_config, write_checkpoint

HELP_EXAMPLE = "--set hidden_size=256 --set 'compress_ratios=[0,4,128,0,0]'"  # 4 layers + 1 MTP entry


def add_parser(sub) -> None:
    p = sub.add_parser("make-checkpoint", help="write a random checkpoint in the official DeepSeek-V4 layout")
    p.add_argument("out", type=Path, help="output directory (created; existing files are overwritten)")
    p.add_argument("--seed", type=seed_arg(), default=0, help="weights seed (default 0)")
    p.add_argument("--shards", type=int_arg(1), default=1, help="safetensors files (default 1; >1 adds an index)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help=f"override a config.json field of the tiny default config, e.g. {HELP_EXAMPLE}")
    p.set_defaults(func=run)


class SetError(ValueError):
    """A bad ``--set`` item (a usage error: exit code 2)."""


def config_from_sets(items: list[str]) -> ModelConfig:
    """The tiny default config with ``KEY=JSON`` overrides, validated as a config.json would be."""
    raw = tiny_config().to_dict()
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SetError(f"--set: {item!r} is not allowed (expected KEY=JSON, e.g. hidden_size=256)")
        try:
            raw[key.strip()] = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SetError(f"--set: {item!r}: the value is not JSON ({exc.msg}; quote strings: "
                           f"{key}='\"text\"')") from None
    try:
        return ModelConfig.from_dict(raw)
    except ConfigError as exc:
        raise SetError(f"--set: {exc}") from None


def run(args) -> int:
    cfg = config_from_sets(args.set)
    write_checkpoint(args.out, cfg, seed=args.seed, num_shards=args.shards)
    print(f"wrote {args.out}")
    return 0
