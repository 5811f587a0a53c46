"""Engine throughput on CPU: output tokens/s at several concurrencies, v4stack's engine beside transformers.

For each model (the bundled demo model; the real-shape random checkpoint of ``bench/decode_bench.py``) and
each concurrency c, c requests with random prompts of ``--prompt-len`` tokens are submitted at once and
decoded greedily for ``--new-tokens`` tokens each (EOS ignored), through
  * the v4stack engine (``LLMEngine``: continuous batching, paged cache), one run per numerics mode;
  * transformers ``generate`` with the same batch (``DeepseekV4ForCausalLM``, fp32 eager, its own cache).
Output tok/s = c x new_tokens / wall time from submission to the last token (prefill included, as
``vllm bench serve`` reports output throughput); TPOT = median time per decode step.

    PYTHONPATH=. .venv/bin/python bench/engine_throughput.py [--quick] [--models demo,real] [--skip-transformers]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.decode_bench import BENCH_CONFIG
from v4stack.config.default_model import default_model_dir
from v4stack.engine.config import EngineConfig, SchedulerConfig
from v4stack.engine.llm_engine import LLMEngine
from v4stack.engine.sampling_params import SamplingParams
from v4stack.modelio.writer import tiny_config, write_checkpoint


def run_v4stack(model_dir: Path, numerics: str, prompts: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """-> (output tok/s, median decode step ms) for all prompts submitted at once."""
    c = prompts.shape[0]
    engine = LLMEngine.from_model_dir(model_dir, EngineConfig(
        numerics=numerics, scheduler=SchedulerConfig(max_num_seqs=max(c, 1), max_num_batched_tokens=8192)))
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    engine.add_request("warm-up", prompts[0, :8].tolist(), SamplingParams(temperature=0, max_tokens=2))
    while engine.has_unfinished():
        engine.step()
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p.tolist(), params)
    steps = []
    while engine.has_unfinished():
        s0 = time.perf_counter()
        engine.step()
        steps.append(time.perf_counter() - s0)
    wall = time.perf_counter() - t0
    return c * new_tokens / wall, 1000 * statistics.median(steps[1:] or steps)


def run_transformers(model_dir: Path, prompts: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    from transformers import DeepseekV4ForCausalLM, FineGrainedFP8Config
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = DeepseekV4ForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager", device_map="cpu",
        quantization_config=FineGrainedFP8Config(dequantize=True)).float().eval()
    with torch.no_grad():
        model.generate(prompts[:1, :8], max_new_tokens=2, do_sample=False)  # warm-up
        t0 = time.perf_counter()
        model.generate(prompts, max_new_tokens=1, do_sample=False)
        prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False)
        wall = time.perf_counter() - t0
    return prompts.shape[0] * new_tokens / wall, 1000 * max(wall - prefill, 0.0) / max(new_tokens - 1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="demo,real", help="demo (bundled), real (real-shape random checkpoint)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--numerics", default="reference,fp32")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: v4stack's load-aware choice; 2 threads on a busy 2-core box collapse)")
    ap.add_argument("--quick", action="store_true", help="concurrency 1 and 16, 8 new tokens")
    ap.add_argument("--skip-transformers", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.concurrency, args.new_tokens = [1, 16], 8
    if args.threads is None:
        from v4stack.platforms.threads import choose_threads

        args.threads = choose_threads()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="v4engine-") as tmp:
        models = {}
        for name in args.models.split(","):
            if name == "demo":
                models[name] = default_model_dir()
            elif name == "real":
                models[name] = write_checkpoint(Path(tmp) / "real", tiny_config(**BENCH_CONFIG), seed=0)
            else:
                raise SystemExit(f"unknown model {name!r}; choose demo or real")
        for name, directory in models.items():
            vocab = tiny_config(**BENCH_CONFIG).vocab_size if name == "real" else 4096
            prompts = torch.randint(3, vocab, (max(args.concurrency), args.prompt_len),
                                    generator=torch.Generator().manual_seed(0))
            for c in args.concurrency:
                for numerics in args.numerics.split(","):
                    tps, tpot = run_v4stack(directory, numerics, prompts[:c], args.new_tokens)
                    rows.append((name, f"v4stack {numerics}", c, tps, tpot))
                    print(f"  done: {name} v4stack {numerics} c={c}: {tps:.1f} tok/s", flush=True)
                if not args.skip_transformers:
                    tps, tpot = run_transformers(directory, prompts[:c], args.new_tokens)
                    rows.append((name, "transformers fp32", c, tps, tpot))
                    print(f"  done: {name} transformers c={c}: {tps:.1f} tok/s", flush=True)
    print(f"\nprompt {args.prompt_len} tokens, {args.new_tokens} greedy tokens per request, {args.threads} threads, "
          f"torch {torch.__version__}\n")
    print("| model | engine | concurrency | output tok/s | TPOT ms | x its c=1 |")
    print("|---|---|---|---|---|---|")
    base = {(m, e): t for m, e, c, t, _ in rows if c == min(args.concurrency)}
    for m, e, c, tps, tpot in rows:
        print(f"| {m} | {e} | {c} | {tps:.1f} | {tpot:.1f} | {tps / base[(m, e)]:.1f} |")


if __name__ == "__main__":
    main()
