"""``v4stack generate``: complete a prompt with a checkpoint (default: the bundled demo model), through the
engine (one request, streamed to stdout as its tokens arrive)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from v4stack.config.default_model import default_model_dir
from v4stack.cli.engine_args import add_engine_args, engine_config_from_args
from v4stack.engine.llm_engine import LLMEngine
from v4stack.engine.sampling_params import SamplingParams, checkpoint_sampling_defaults


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
    add_engine_args(p)
    p.set_defaults(func=run)


def sampling_from_args(args, model_dir: Path) -> SamplingParams:
    """Flags win over the checkpoint's generation_config.json defaults; validated before any weights load."""
    given = {"temperature": args.temperature, "top_p": args.top_p}
    defaults = checkpoint_sampling_defaults(model_dir)
    return SamplingParams(**(defaults | {k: v for k, v in given.items() if v is not None}), seed=args.seed,
                          max_tokens=args.max_tokens)


def run(args) -> int:
    model_dir = args.model or default_model_dir()
    sampling = sampling_from_args(args, model_dir)
    t0 = time.perf_counter()
    engine = LLMEngine.from_model_dir(model_dir, engine_config_from_args(args))
    load_s = time.perf_counter() - t0
    prompt_ids = engine.encode(args.prompt)
    engine.add_request("generate", prompt_ids, sampling)
    print(args.prompt, end="", flush=True)
    t_start = time.perf_counter()
    t_first = None
    final = None
    while engine.has_unfinished():
        for out in engine.step():
            piece = out.outputs[0]
            if piece.token_ids_delta and t_first is None:
                t_first = time.perf_counter()
            print(piece.text_delta, end="", flush=True)
            final = out
    t_end = time.perf_counter()
    print()
    done = final.outputs[0]
    n = len(done.token_ids)
    prefill_s = (t_first or t_end) - t_start
    decode_rate = (n - 1) / (t_end - t_first) if t_first and n > 1 and t_end > t_first else 0.0
    print(f"[{model_dir.name}] load {load_s:.2f}s | prompt {len(prompt_ids)} tok, prefill {prefill_s:.2f}s"
          f" | {n} tok generated, decode {decode_rate:.1f} tok/s | finish: {done.finish_reason}", file=sys.stderr)
    return 0 if done.finish_reason != "error" else 1
