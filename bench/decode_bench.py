"""Decode throughput on CPU: v4stack (reference and fp32 numerics) next to HF transformers, batch 1 and 8.

A random checkpoint with the released head shapes (head_dim 512, qk_rope_head_dim 64, index_head_dim 128,
vocab 129280, hc_mult 4, 128-token window) but a small width and depth is written to a temp dir in the official
layout (``write_checkpoint``), then loaded by each engine:
  * v4stack ``Numerics.reference()`` (bf16 + QAT simulation) and ``Numerics.exact_fp32()``;
  * transformers ``DeepseekV4ForCausalLM`` (FP8/FP4 dequantised at load, fp32, eager attention, its own cache).
Each engine prefills ``batch`` random prompts of the same length (untimed), takes one warm-up decode step, then
decodes ``--new-tokens`` greedy tokens one step at a time, timing each step; tok/s = batch * new_tokens / decode
wall time, also shown from the median step (robust to other processes on a shared machine).
v4stack batch 8 = one ``ForwardBatch.build([8 states], [8 one-token tensors])`` per step.

    PYTHONPATH=. .venv/bin/python bench/decode_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from v4stack.config.numerics import Numerics
from v4stack.model.decode_loop import prefill_then_decode, v4_forward
from v4stack.modelio.writer import tiny_config, write_checkpoint
from v4stack.modelio.loader import load_model

BENCH_CONFIG = dict(
    vocab_size=129280, hidden_size=512, num_hidden_layers=3, compress_ratios=(0, 4, 128, 0),  # window, CSA, HCA | MTP
    num_attention_heads=4, head_dim=512, qk_rope_head_dim=64, q_lora_rank=256, o_groups=2, o_lora_rank=128,
    index_n_heads=64, index_head_dim=128, index_topk=512, sliding_window=128,
    n_routed_experts=16, num_experts_per_tok=4, moe_intermediate_size=256, num_hash_layers=1,
    hc_mult=4, hc_sinkhorn_iters=20,
)


def describe(cfg) -> str:
    return (f"vocab {cfg.vocab_size}, hidden {cfg.hidden_size}, layers {cfg.num_hidden_layers} "
            f"(compress_ratios {list(cfg.compress_ratios[:cfg.num_hidden_layers])}, hash {cfg.num_hash_layers}), "
            f"heads {cfg.num_attention_heads} x head_dim {cfg.head_dim} (rope {cfg.qk_rope_head_dim}), "
            f"q_lora {cfg.q_lora_rank}, o {cfg.o_groups} x {cfg.o_lora_rank}, indexer {cfg.index_n_heads} x "
            f"{cfg.index_head_dim} top-{cfg.index_topk}, experts {cfg.n_routed_experts} (top-{cfg.num_experts_per_tok})"
            f" x inter {cfg.moe_intermediate_size} + 1 shared, hc_mult {cfg.hc_mult}, window {cfg.sliding_window}")


def bench_v4stack(directory: Path, numerics: Numerics, prompts: torch.Tensor, new_tokens: int):
    """-> (prefill s, per-step decode s [new_tokens], generated ids [B, 1 + new_tokens])."""
    model = load_model(directory, numerics, progress=False)
    forward = v4_forward(model, [model.new_state() for _ in range(prompts.shape[0])])
    # the prefill, one untimed warm-up step, then new_tokens timed steps
    steps = list(prefill_then_decode(forward, list(prompts), new_tokens + 2, choose=model.compute.ops.argmax))
    ids = torch.stack([s.tokens for s in steps[:-1]], 1)  # the last step's tokens were never fed back
    return steps[0].seconds, [s.seconds for s in steps[2:]], ids


def bench_transformers(directory: Path, prompts: torch.Tensor, new_tokens: int):
    from transformers import DeepseekV4ForCausalLM, FineGrainedFP8Config
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = DeepseekV4ForCausalLM.from_pretrained(
        str(directory), dtype=torch.float32, attn_implementation="eager", device_map="cpu",
        quantization_config=FineGrainedFP8Config(dequantize=True)).float().eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        res = model(input_ids=prompts, use_cache=True, logits_to_keep=1)
        prefill_s = time.perf_counter() - t0
        cache, nxt = res.past_key_values, res.logits[:, -1].argmax(-1)
        res = model(input_ids=nxt[:, None], past_key_values=cache, use_cache=True)  # warm-up step (untimed)
        out = [nxt]
        cache, nxt = res.past_key_values, res.logits[:, -1].argmax(-1)
        steps = []
        for _ in range(new_tokens):
            out.append(nxt)
            t0 = time.perf_counter()
            res = model(input_ids=nxt[:, None], past_key_values=cache, use_cache=True)
            cache, nxt = res.past_key_values, res.logits[:, -1].argmax(-1)
            steps.append(time.perf_counter() - t0)
    return prefill_s, steps, torch.stack(out, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short prompt, few tokens, for a fast run")
    ap.add_argument("--prompt-len", type=int, default=None, help="prompt tokens per sequence (default 200, quick 140)")
    ap.add_argument("--new-tokens", type=int, default=None, help="timed decode steps (default 32, quick 6)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-transformers", action="store_true")
    args = ap.parse_args()
    prompt_len = args.prompt_len or (140 if args.quick else 200)
    new_tokens = args.new_tokens or (6 if args.quick else 32)
    torch.set_num_threads(args.threads)

    cfg = tiny_config(**BENCH_CONFIG)
    settings = [("v4stack reference (bf16+QAT)", lambda d, p: bench_v4stack(d, Numerics.reference(), p, new_tokens)),
                ("v4stack fp32", lambda d, p: bench_v4stack(d, Numerics.exact_fp32(), p, new_tokens))]
    if not args.skip_transformers:
        settings.append(("transformers fp32 eager", lambda d, p: bench_transformers(d, p, new_tokens)))

    with tempfile.TemporaryDirectory(prefix="v4bench-") as tmp:
        t0 = time.perf_counter()
        directory = write_checkpoint(Path(tmp) / "ckpt", cfg, seed=0)
        size = sum(f.stat().st_size for f in directory.glob("*.safetensors")) / 2**20
        print(f"checkpoint: {describe(cfg)}")
        print(f"  written in {time.perf_counter() - t0:.1f} s ({size:.0f} MiB); torch {torch.__version__}, "
              f"{args.threads} threads; prompt {prompt_len} tokens (random ids), 1 warm-up + {new_tokens} timed "
              f"greedy decode steps per sequence")
        prompts = torch.randint(3, cfg.vocab_size, (max(args.batches), prompt_len),
                                generator=torch.Generator().manual_seed(0))
        rows, generated = [], {}
        for name, run in settings:
            for batch in args.batches:
                prefill_s, steps, ids = run(directory, prompts[:batch])
                generated[(name, batch)] = ids
                median = statistics.median(steps)
                rows.append((name, batch, prefill_s, sum(steps), batch * new_tokens / sum(steps), batch / median,
                             1000 * median))
                print(f"  done: {name}, batch {batch}", flush=True)

    hf_name = settings[-1][0] if not args.skip_transformers else None
    header = ("setting", "batch", "prefill s", "decode s", "tok/s", "tok/s (median step)", "median ms/step",
              "greedy = HF")
    print()
    print(f"| {' | '.join(header)} |")
    print("|" + "|".join("---" for _ in header) + "|")
    for name, batch, prefill_s, decode_s, tps, tps_median, ms in rows:
        agree = "-"
        if hf_name and name != hf_name:  # tokens agreeing with transformers' greedy run before the first difference
            ours, theirs = generated[(name, batch)], generated[(hf_name, batch)]
            same = (ours == theirs).long().cumprod(1).sum(1)
            agree = f"{int(same.min())}/{ours.shape[1]}" + (" (min over seqs)" if batch > 1 else "")
        print(f"| {name} | {batch} | {prefill_s:.2f} | {decode_s:.2f} | {tps:.1f} | {tps_median:.1f} | {ms:.0f} | "
              f"{agree} |")
    print("\ntok/s = batch x timed steps / decode s; the median-step column is robust to other load on a shared "
          "machine. greedy = HF: generated tokens (incl. the prefill's) equal to transformers' before the first "
          "difference; bf16+QAT numerics are expected to drift from the fp32 run on a random model.")


if __name__ == "__main__":
    main()
