"""A long prompt through the engine: the serving process's resident memory beside the planner's estimate.

A random checkpoint with V4-Flash's layer schedule (43 layers: 2 window, 21 CSA, 20 HCA, + MTP; head_dim 512,
indexer 64 x 128, but a small width) takes one prompt of ``--tokens`` tokens, prefilled in chunks of
``--chunk`` tokens, then decodes a few tokens. The checkpoint is written by a separate process (or taken from
``--checkpoint``), so its fp32 masters are not in the measured RSS. Printed: RSS after import, after load and at
every step (current, and the step's own peak where the kernel can reset the high-water mark), then the planner's
terms for the same config and chunk (``v4stack plan``: weights + KV for the context + compressor state + the window
blocks (whole blocks: the sequence's window + one step's rows) + one chunk's workspace + the fast mode's prepared weights) beside the measured peak.

    PYTHONPATH=. .venv/bin/python bench/long_context.py [--tokens 32768] [--chunk 1024] [--numerics fast]
        [--probe]   # also the deterministic activation peak of every step (engine/activation_probe.py; slower)
        [--trim]    # glibc malloc_trim(0) after every step, to see what the allocator holds
        [--mmap-threshold BYTES]  # glibc M_MMAP_THRESHOLD (default 128 KiB, fixed; 0: glibc's dynamic default)

glibc's default mmap threshold is dynamic: each freed mmap'd block raises it (up to 32 MiB), after which the
per-layer temporaries of a chunk (1-64 MiB each) come from the heap and their freed space stays resident, so RSS
drifts ~200 MiB above what is live. A fixed threshold (``mallopt(M_MMAP_THRESHOLD)``, the same as the environment
variable ``MALLOC_MMAP_THRESHOLD_``) maps every large temporary and unmaps it when freed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1 << 20
FLASH_SCHEDULE = (0, 0) + (4, 128) * 20 + (4, 0)  # 43 layers + the MTP block (model_spec s2.1)
CONFIG = dict(vocab_size=4096, hidden_size=256, num_hidden_layers=43, compress_ratios=FLASH_SCHEDULE,
              num_attention_heads=2, head_dim=512, qk_rope_head_dim=64, q_lora_rank=128, o_groups=2, o_lora_rank=64,
              index_n_heads=64, index_head_dim=128, index_topk=512, sliding_window=128, n_routed_experts=8,
              num_experts_per_tok=2, moe_intermediate_size=128, num_hash_layers=3, hc_mult=4, hc_sinkhorn_iters=20,
              max_position_embeddings=1 << 20)
PAGE = resource.getpagesize()
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter (malloc.h)
# Fixed mmap threshold: glibc's own starting value (128 KiB); allocations above it are mapped and unmapped
# on free, so freed activations leave RSS at once.
MMAP_THRESHOLD = 128 * 1024
DECODED = 8  # tokens decoded after the prompt


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def rss_peak() -> int:
    """High-water RSS since the last :func:`reset_peak` (VmHWM), else since start (ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (``clear_refs`` 5); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def write_random_checkpoint(directory: Path) -> None:
    """Run in a child process: the writer's fp32 masters never enter the measured process."""
    from v4stack.modelio.writer import tiny_config, write_checkpoint
    write_checkpoint(directory, tiny_config(**CONFIG), seed=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--numerics", default="fast")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", type=Path, help="use this random checkpoint instead of writing one")
    ap.add_argument("--write-only", type=Path, help=argparse.SUPPRESS)  # the child process's entry
    ap.add_argument("--probe", action="store_true", help="deterministic activation peak of every step")
    ap.add_argument("--trim", action="store_true", help="malloc_trim(0) after every step")
    ap.add_argument("--mmap-threshold", type=int, default=MMAP_THRESHOLD,
                    help=f"glibc M_MMAP_THRESHOLD in bytes (default {MMAP_THRESHOLD}; 0: the dynamic default)")
    ap.add_argument("--progress", action="store_true", help="print every step (default: every 8th and the last)")
    args = ap.parse_args()
    if args.write_only:
        write_random_checkpoint(args.write_only)
        return
    with tempfile.TemporaryDirectory(prefix="v4long-") as tmp:
        directory = args.checkpoint
        if directory is None:
            directory = Path(tmp) / "ckpt"
            subprocess.run([sys.executable, __file__, "--write-only", str(directory)], check=True)
        run(args, directory)


def run(args, directory: Path) -> None:
    if args.mmap_threshold:
        if not ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, args.mmap_threshold):
            raise SystemExit(f"mallopt(M_MMAP_THRESHOLD, {args.mmap_threshold}) refused")
    before_import = rss_now()
    import torch

    from v4stack.engine.activation_probe import ActivationProbe
    from v4stack.envs import LIBRARY_DEFAULTS  # set by import v4stack unless in the environment
    from v4stack.engine.config import CacheConfig, EngineConfig, SchedulerConfig
    from v4stack.engine.llm_engine import LLMEngine
    from v4stack.engine.sampling_params import SamplingParams
    from v4stack.ops.fast.prepare import attached_bytes
    from v4stack.planner.plan import make_plan

    torch.set_num_threads(args.threads)
    imported = rss_now()
    engine = LLMEngine.from_model_dir(directory, EngineConfig(
        numerics=args.numerics, scheduler=SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=args.chunk),
        cache=CacheConfig(memory_bytes=8 << 30, enable_prefix_caching=False)))
    loaded = rss_now()
    libc = ctypes.CDLL("libc.so.6") if args.trim else None
    total = args.tokens + DECODED
    prompt = torch.randint(3, engine.model.cfg.vocab_size, (args.tokens,),
                           generator=torch.Generator().manual_seed(0)).tolist()
    threshold = f"fixed {args.mmap_threshold}" if args.mmap_threshold else "glibc dynamic"
    libraries = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in LIBRARY_DEFAULTS)
    print(f"RSS before import {before_import / MIB:.1f} MiB, after import {imported / MIB:.1f}, "
          f"after load {loaded / MIB:.1f} (numerics {args.numerics}, {args.threads} threads, mmap threshold "
          f"{threshold}, {libraries})", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    engine.add_request("long", prompt, SamplingParams(temperature=0, max_tokens=DECODED, ignore_eos=True))
    steps, peak, worst_probe = 0, loaded, (0, "")
    while engine.has_unfinished():
        per_step = reset_peak()
        if args.probe:
            with ActivationProbe() as probe:
                engine.step()
            worst_probe = max(worst_probe, (probe.peak_bytes, probe.peak_op))
        else:
            engine.step()
        if libc is not None:
            libc.malloc_trim(0)
        steps += 1
        step_peak = rss_peak()
        peak = max(peak, step_peak)
        req = engine.scheduler.running[0] if engine.scheduler.running else None
        done = req.num_computed_tokens if req is not None else total
        if args.progress or steps % 8 == 0 or req is None:
            probed = f", activations {probe.peak_bytes / MIB:.1f} MiB at {probe.peak_op}" if args.probe else ""
            print(f"  step {steps}: {done} tokens cached, {time.perf_counter() - t0:.0f} s wall, "
                  f"{time.process_time() - c0:.0f} s CPU, load {os.getloadavg()[0]:.1f}, RSS {rss_now() / MIB:.1f}"
                  f" MiB, {'step peak' if per_step else 'peak so far'} {step_peak / MIB:.1f} MiB{probed}", flush=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = max(peak, rss_peak())
    plan = make_plan(str(directory / "config.json"), "cpu", 1, context=total, kv_dtype="bf16", chunk=args.chunk)
    scale = torch.empty((), dtype=engine.model.compute.dtype).element_size() / 2  # planner: bf16 cache
    kv_bytes = plan.kv_bytes_per_token * total * scale
    fixed = plan.kv_fixed_bytes_per_sequence["compressor_state"]
    # the window groups in the engine's whole blocks (cache.window_blocks): the sequence's window + one step's rows
    window = (plan.kv_fixed_bytes_per_sequence["window"] + plan.kv_step_bytes) * scale
    held = sum(engine.cache.pools[p.name].num_blocks * p.bytes_per_block for p in engine.tensors.specs.pools
               if p.sliding_window is not None)
    terms = {"weights": plan.weights_bytes_per_device, "prepared weights": attached_bytes(engine.model),
             f"KV (bf16 x{scale:g})": kv_bytes, "compressor state": fixed, "window blocks": window,
             "workspace": plan.workspace_bytes}
    estimate = sum(terms.values())
    overhead = plan.reserve_bytes  # the planner's CPU runtime reserve (Python + torch after import + first forward)
    print(f"prompt {args.tokens} tokens in chunks of {args.chunk} + {DECODED} decoded, numerics {args.numerics}: "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU (all threads), {steps} steps")
    if args.probe:
        print(f"largest step activations (probe) {worst_probe[0] / MIB:.1f} MiB at {worst_probe[1]}; "
              f"planner workspace {plan.workspace_bytes / MIB:.1f} MiB")
    print("planner: " + " + ".join(f"{k} {v / MIB:.1f}" for k, v in terms.items()) + f" = {estimate / MIB:.1f} MiB")
    print("planner workspace: " + ", ".join(f"{k} {v / MIB:.1f}" for k, v in plan.workspace_terms.items()))
    print(f"stated overhead: the planner's CPU runtime reserve {overhead / MIB:.1f} MiB (the runtime after a first "
          f"1,024-token chunk; here RSS after import {imported / MIB:.1f} MiB); the engine's window pools {held / MIB:.1f} MiB "
          f"(the planner's window blocks count the MTP layer too)")
    verdict = "within" if peak <= estimate + overhead else "ABOVE"
    print(f"peak RSS {peak / MIB:.1f} MiB (after load {loaded / MIB:.1f}) vs planner + overhead "
          f"{(estimate + overhead) / MIB:.1f} MiB: {verdict} ({(peak - estimate - overhead) / MIB:+.1f} MiB)")


if __name__ == "__main__":
    main()
