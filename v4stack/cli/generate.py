"""``v4stack generate``: complete a prompt with a checkpoint (default: the bundled demo model)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from v4stack.config.numerics import Numerics
from v4stack.platforms import get_platform
from v4stack.runtime.default_model import default_model_dir
from v4stack.runtime.generator import generate_text
from v4stack.runtime.sampler import SamplingParams, checkpoint_sampling_defaults
from v4stack.runtime.tokenizer import Tokenizer
from v4stack.weights.loader import load_model


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a prompt")
    p.add_argument("--model", type=Path, default=None,
                   help="checkpoint directory (official layout); default: the bundled demo model")
    p.add_argument("--prompt", default="The king said", help="prompt text")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy; default: the checkpoint's generation_config.json, else 1.0")
    p.add_argument("--top-p", type=float, default=None,
                   help="default: the checkpoint's generation_config.json, else 1.0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--numerics", choices=["reference", "fp32"], default="reference",
                   help="reference: bf16 + the official QAT simulation (default); fp32: exact, no simulation")
    p.add_argument("--platform", default="cpu", help="cpu or cuda (reference ops on that device)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.max_tokens < 1:
        raise ValueError("--max-tokens must be at least 1")
    model_dir = args.model or default_model_dir()
    t0 = time.perf_counter()
    platform = get_platform(args.platform)
    model = load_model(model_dir, Numerics.from_name(args.numerics), ops=platform.op_table(), device=platform.device())
    tokenizer = Tokenizer(model_dir)
    load_s = time.perf_counter() - t0
    print(args.prompt, end="", flush=True)
    given = {"temperature": args.temperature, "top_p": args.top_p}  # flags win over the checkpoint's defaults
    sampling = SamplingParams(**(checkpoint_sampling_defaults(model_dir)
                                 | {k: v for k, v in given.items() if v is not None}), seed=args.seed)
    _, stats = generate_text(model, tokenizer, args.prompt, args.max_tokens, sampling,
                             on_text=lambda piece: print(piece, end="", flush=True))
    print()
    print(f"[{model_dir.name}] load {load_s:.2f}s | prompt {stats.prompt_tokens} tok, prefill {stats.prefill_s:.2f}s"
          f" | {stats.generated_tokens} tok generated, decode {stats.decode_tokens_per_s:.1f} tok/s"
          f" | finish: {stats.finish_reason}", file=sys.stderr)
    return 0
