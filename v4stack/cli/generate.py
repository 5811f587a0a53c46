"""``v4stack generate``: complete a prompt with a checkpoint (default: the bundled demo model), through the
engine (one request, streamed to stdout as its tokens arrive)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from v4stack.cli.args import float_arg, int_arg, seed_arg, text_arg
from v4stack.config import validation as check
from v4stack.config.default_model import default_model_dir
from v4stack.cli.engine_args import add_engine_args, engine_config_from_args
from v4stack.config.v41_config import V41Config
from v4stack.engine.llm_engine import LLMEngine, engine_model_config
from v4stack.engine.sampling_params import SamplingParams, checkpoint_sampling_defaults
from v4stack.engine.tokenizer import Tokenizer

DEFAULT_MAX_TOKENS = 64


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a prompt")
    p.add_argument("--model", type=Path, default=None,
                   help="checkpoint directory (official layout); default: the bundled demo model")
    p.add_argument("--prompt", type=text_arg(), default="The king said", help="prompt text (UTF-8)")
    p.add_argument("--max-tokens", type=int_arg(1), default=DEFAULT_MAX_TOKENS,
                   help=f"tokens to generate (default {DEFAULT_MAX_TOKENS}); prompt + max tokens must fit the "
                        "context limit")
    p.add_argument("--temperature", type=float_arg(0.0), default=None,
                   help="0 = greedy; default: the checkpoint's generation_config.json, else 1.0")
    p.add_argument("--top-p", type=float_arg(0.0, 1.0, lo_open=True), default=None,
                   help="in (0, 1]; default: the checkpoint's generation_config.json, else 1.0")
    p.add_argument("--seed", type=seed_arg(), default=0, help="sampling seed (default 0)")
    add_engine_args(p)
    p.set_defaults(func=run)


def sampling_from_args(args, model_dir: Path) -> SamplingParams:
    """Flags win over the checkpoint's generation_config.json defaults; validated before any weights load."""
    given = {"temperature": args.temperature, "top_p": args.top_p}
    defaults = checkpoint_sampling_defaults(model_dir)
    return SamplingParams(**(defaults | {k: v for k, v in given.items() if v is not None}), seed=args.seed,
                          max_tokens=args.max_tokens)


def preflight(model_dir: Path, prompt: str, max_tokens: int, max_model_len: int | None) -> tuple[object, list[int]]:
    """(config, the prompt's token ids), after refusing (ContextLengthError, one line with the numbers) a prompt +
    max_tokens beyond the context limit; reads config.json and the tokenizer only, no weights."""
    cfg = engine_model_config(model_dir)
    limit = check.context_limit(cfg.max_position_embeddings, max_model_len, "--max-model-len")
    prompt_ids = Tokenizer(model_dir).encode(prompt)
    check.check_context(len(prompt_ids), max_tokens, limit)
    return cfg, prompt_ids


def run(args) -> int:
    model_dir = args.model or default_model_dir()
    sampling = sampling_from_args(args, model_dir)
    cfg, prompt_ids = preflight(model_dir, args.prompt, args.max_tokens, args.max_model_len)
    config = engine_config_from_args(args)
    t0 = time.perf_counter()
    engine = LLMEngine.from_model_dir(model_dir, config)
    load_s = time.perf_counter() - t0
    engine.add_request("generate", prompt_ids, sampling)
    # a prompt longer than one step's token budget is prefilled in chunks, which can take minutes on a CPU:
    # one progress line per chunk on stderr, and the prompt echoed only once its prefill is done
    chunked = len(prompt_ids) > config.scheduler.max_num_batched_tokens
    t_start = time.perf_counter()
    t_first = None
    final = None
    while engine.has_unfinished():
        outs = engine.step()
        if chunked and t_first is None and not any(o.outputs[0].token_ids_delta for o in outs):
            print(f"generate: prefill {engine.stats.prompt_tokens:,}/{len(prompt_ids):,} prompt tokens "
                  f"({time.perf_counter() - t_start:.1f}s)", file=sys.stderr, flush=True)
        for out in outs:
            piece = out.outputs[0]
            if final is None:
                print(args.prompt, end="", flush=True)
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
          f" | {n} tok generated, decode {decode_rate:.1f} tok/s | finish: {done.finish_reason}"
          + (f" | engram {config.engram.tier}" if isinstance(cfg, V41Config) else ""), file=sys.stderr)
    return 0 if done.finish_reason != "error" else 1

