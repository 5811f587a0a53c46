"""The default model used when no ``--model`` is given.

Until the trained demo checkpoint (issue #4) is bundled under ``models/``, this is a small random
checkpoint in the official layout, written once into the cache directory. Its text is noise; it shows
that the whole path (loader, model, tokenizer, sampling) runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from v4stack import envs
from v4stack.testing.checkpoint_writer import tiny_config, write_checkpoint

DEMO_NAME = "demo-random-v1"
DEMO_SEED = 1234


def default_model_dir(announce: Callable[[str], None] = lambda _: None) -> Path:
    target = envs.cache_dir() / DEMO_NAME
    if not (target / "config.json").exists():
        announce(f"building the default random demo checkpoint in {target} (random weights: expect noise)")
        write_checkpoint(target, tiny_config(), seed=DEMO_SEED)
    return target
