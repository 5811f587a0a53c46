"""Engine throughput on CPU: output tokens/s at several concurrencies, v4stack's engine beside transformers.

For each model (the bundled demo model; the real-shape random checkpoint of ``bench/decode_bench.py``) and
each concurrency c, c requests with random prompts of ``--prompt-len`` tokens are submitted at once and
decoded greedily for ``--new-tokens`` tokens each (EOS ignored), through
  * the v4stack engine (``LLMEngine``: continuous batching, paged cache), one run per numerics mode;
  * transformers ``generate`` with the same batch (``DeepseekV4ForCausalLM``, fp32 eager, its own cache).
Output tok/s = c x new_tokens / time from submission to the last token (prefill included, as ``vllm bench serve``
reports output throughput); TPOT = median time per decode step; "prefill share" = the part of that time spent in
steps that still prefill (v4stack) or in a 1-token ``generate`` of the same batch (transformers): with enough new
tokens decode dominates. ``--clock cpu`` takes this process's CPU time instead of wall time (with ``--threads 1``
the figure that stays comparable on a loaded machine); every row carries the 1-minute load average at its end.

    PYTHONPATH=. .venv/bin/python bench/engine_throughput.py [--quick] [--models demo,real] [--skip-transformers]
        [--numerics fast] [--new-tokens 64] [--threads 1] [--clock cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

from bench.decode_bench import BENCH_CONFIG
from v4stack.config.default_model import default_model_dir
from v4stack.engine.config import EngineConfig, SchedulerConfig
from v4stack.engine.llm_engine import LLMEngine
from v4stack.engine.sampling_params import SamplingParams
from v4stack.modelio.writer import tiny_config, write_checkpoint


# --clock: wall time (what users see, on a quiet machine) or this process's CPU time (1 thread: time spent waiting
# for a core on a loaded machine is not counted)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class Figure(NamedTuple):
    tok_s: float          # output tokens per second of the chosen clock
    tpot_ms: float        # median decode step
    prefill_share: float  # the run's time in prefill, 0..1
    load: float           # 1-minute load average when the run ended


def run_v4stack(model_dir: Path, numerics: str, prompts: torch.Tensor, new_tokens: int,
                clock=time.perf_counter) -> Figure:
    """All prompts submitted at once, decoded greedily to ``new_tokens`` each."""
    c = prompts.shape[0]
    engine = LLMEngine.from_model_dir(model_dir, EngineConfig(
        numerics=numerics, scheduler=SchedulerConfig(max_num_seqs=max(c, 1), max_num_batched_tokens=8192)))
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    engine.add_request("warm-up", prompts[0, :8].tolist(), SamplingParams(temperature=0, max_tokens=2))
    while engine.has_unfinished():
        engine.step()
    t0 = clock()
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p.tolist(), params)
    decode, prefill = [], 0.0
    while engine.has_unfinished():
        prefilling = bool(engine.scheduler.waiting) or any(r.is_prefill for r in engine.scheduler.running)
        s0 = clock()
        engine.step()
        if prefilling:
            prefill += clock() - s0
        else:
            decode.append(clock() - s0)
    total = clock() - t0
    return Figure(c * new_tokens / total, 1000 * statistics.median(decode or [0.0]), prefill / total,
                  os.getloadavg()[0])


def run_transformers(model_dir: Path, prompts: torch.Tensor, new_tokens: int, clock=time.perf_counter) -> Figure:
    from transformers import DeepseekV4ForCausalLM, FineGrainedFP8Config
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = DeepseekV4ForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager", device_map="cpu",
        quantization_config=FineGrainedFP8Config(dequantize=True)).float().eval()
    mask = torch.ones_like(prompts)
    with torch.no_grad():
        model.generate(prompts[:1, :8], max_new_tokens=2, do_sample=False)  # warm-up
        t0 = clock()
        model.generate(prompts, attention_mask=mask, max_new_tokens=1, do_sample=False)
        prefill = clock() - t0
        t0 = clock()
        model.generate(prompts, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False)
        total = clock() - t0
    return Figure(prompts.shape[0] * new_tokens / total, 1000 * max(total - prefill, 0.0) / max(new_tokens - 1, 1),
                  min(prefill / total, 1.0), os.getloadavg()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="demo,real", help="demo (bundled), real (real-shape random checkpoint)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--numerics", default="fast", help="v4stack numerics modes, comma-separated (fast,reference,fp32)")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64, help="per request; enough that decode dominates")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: v4stack's load-aware choice; 2 threads on a busy 2-core box collapse)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="cpu: this process's CPU time (use with --threads 1 on a loaded machine)")
    ap.add_argument("--quick", action="store_true", help="concurrency 1 and 16, 8 new tokens")
    ap.add_argument("--skip-transformers", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.concurrency, args.new_tokens = [1, 16], 8
    if args.threads is None:
        from v4stack.platforms.threads import choose_threads

        args.threads = choose_threads()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
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
                    fig = run_v4stack(directory, numerics, prompts[:c], args.new_tokens, clock)
                    rows.append((name, f"v4stack {numerics}", c, fig))
                    print(f"  done: {name} v4stack {numerics} c={c}: {fig.tok_s:.1f} tok/s, load {fig.load:.1f}",
                          flush=True)
                if not args.skip_transformers:
                    fig = run_transformers(directory, prompts[:c], args.new_tokens, clock)
                    rows.append((name, "transformers fp32", c, fig))
                    print(f"  done: {name} transformers c={c}: {fig.tok_s:.1f} tok/s, load {fig.load:.1f}", flush=True)
    print(f"\nprompt {args.prompt_len} tokens, {args.new_tokens} greedy tokens per request, {args.threads} threads, "
          f"{args.clock} clock, torch {torch.__version__}\n")
    print(table(rows, min(args.concurrency)))


def table(rows: list, base_c: int) -> str:
    """Markdown rows (model, engine, c, Figure), each engine's rate also as a multiple of its rate at ``base_c``."""
    out = ["| model | engine | concurrency | output tok/s | TPOT ms | prefill share | x its c=%d | load |" % base_c,
           "|---|---|---|---|---|---|---|---|"]
    base = {(m, e): f.tok_s for m, e, c, f in rows if c == base_c}
    for m, e, c, f in rows:
        ratio = f"{f.tok_s / base[(m, e)]:.1f}" if (m, e) in base else "-"
        out.append(f"| {m} | {e} | {c} | {f.tok_s:.1f} | {f.tpot_ms:.1f} | {f.prefill_share:.0%} | {ratio} | "
                   f"{f.load:.1f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
