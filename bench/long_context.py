"""A long prompt through the engine: peak resident memory beside the planner's estimate for the same config.

A random checkpoint with V4-Flash's layer schedule (43 layers: 2 window, 21 CSA, 20 HCA, + MTP; head_dim 512,
indexer 64 x 128, but a small width) takes one prompt of ``--tokens`` tokens, prefilled in chunks of
``--chunk`` tokens, then decodes a few tokens. Printed: the process's peak RSS (ru_maxrss) and its parts as
the planner models them: weights + KV for the context (``v4stack plan``'s ``kv_bytes_per_token``, scaled to
the cache dtype) + the fixed per-sequence state + one chunk's workspace, plus what the engine holds beyond
that (window blocks, the Python/torch runtime measured before loading).

    PYTHONPATH=. .venv/bin/python bench/long_context.py [--tokens 32768] [--chunk 2048]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from v4stack.config.model_config import ModelConfig
from v4stack.engine.config import CacheConfig, EngineConfig, SchedulerConfig
from v4stack.engine.llm_engine import LLMEngine
from v4stack.engine.sampling_params import SamplingParams
from v4stack.planner.plan import make_plan
from v4stack.modelio.writer import tiny_config, write_checkpoint

MIB = 1 << 20
FLASH_SCHEDULE = (0, 0) + (4, 128) * 20 + (4, 0)  # 43 layers + the MTP block (model_spec s2.1)
CONFIG = dict(vocab_size=4096, hidden_size=256, num_hidden_layers=43, compress_ratios=FLASH_SCHEDULE,
              num_attention_heads=2, head_dim=512, qk_rope_head_dim=64, q_lora_rank=128, o_groups=2, o_lora_rank=64,
              index_n_heads=64, index_head_dim=128, index_topk=512, sliding_window=128, n_routed_experts=8,
              num_experts_per_tok=2, moe_intermediate_size=128, num_hash_layers=3, hc_mult=4, hc_sinkhorn_iters=20,
              max_position_embeddings=1 << 20)


def rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--numerics", default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--progress", action="store_true", help="print tokens done and peak RSS after every step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    baseline = rss_peak()
    with tempfile.TemporaryDirectory(prefix="v4long-") as tmp:
        directory = write_checkpoint(Path(tmp) / "ckpt", tiny_config(**CONFIG), seed=0)
        cfg = ModelConfig.from_file(directory)
        total = args.tokens + 8
        engine = LLMEngine.from_model_dir(directory, EngineConfig(
            numerics=args.numerics, scheduler=SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=args.chunk),
            cache=CacheConfig(memory_bytes=8 << 30, enable_prefix_caching=False)))
        loaded = rss_peak()
        prompt = torch.randint(3, cfg.vocab_size, (args.tokens,), generator=torch.Generator().manual_seed(0)).tolist()
        t0 = time.perf_counter()
        engine.add_request("long", prompt, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
        steps = 0
        while engine.has_unfinished():
            engine.step()
            steps += 1
            if args.progress:
                req = engine.scheduler.running[0] if engine.scheduler.running else None
                done = req.num_computed_tokens if req is not None else total
                print(f"  step {steps}: {done} tokens in the cache, {time.perf_counter() - t0:.0f} s, "
                      f"peak RSS {rss_peak() / MIB:.0f} MiB", flush=True)
        wall = time.perf_counter() - t0
        peak = rss_peak()
        plan = make_plan(str(directory / "config.json"), "cpu", 1, context=total, kv_dtype="bf16")
        scale = torch.empty((), dtype=engine.model.compute.dtype).element_size() / 2  # planner: bf16 cache
        kv_bytes = plan.kv_bytes_per_token * total * scale
        fixed = plan.kv_fixed_bytes_per_sequence["compressor_state"]
        window = sum(3 * p.bytes_per_block
                     for p in engine.tensors.specs.pools if p.sliding_window is not None)
        estimate = plan.weights_bytes_per_device + kv_bytes + fixed + plan.workspace_bytes
    print(f"prompt {args.tokens} tokens in chunks of {args.chunk} + 8 decoded, numerics {args.numerics}: "
          f"{wall:.1f} s, {steps} steps")
    print(f"planner (bf16 KV x{scale:g} for this cache dtype): weights {plan.weights_bytes_per_device / MIB:.1f} MiB"
          f" + KV {kv_bytes / MIB:.1f} MiB + compressor state {fixed / MIB:.1f} MiB + workspace "
          f"{plan.workspace_bytes / MIB:.1f} MiB = {estimate / MIB:.1f} MiB")
    print(f"engine beyond the planner: window blocks held (3 per window group) {window / MIB:.1f} MiB; "
          f"process before loading {baseline / MIB:.1f} MiB")
    print(f"peak RSS {peak / MIB:.1f} MiB (after load {loaded / MIB:.1f} MiB) = planner estimate "
          f"{estimate / MIB:.1f} + {(peak - estimate) / MIB:.1f} MiB "
          f"({(peak - estimate - baseline) / MIB:.1f} MiB beyond the runtime baseline)")


if __name__ == "__main__":
    main()
