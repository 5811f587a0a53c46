"""Engram tiers on CPU: tokens/s and rows fetched per token for the device, host and disk tiers, with the rows
prefetched on a background thread (as soon as a forward's hash ids are known) and fetched on demand.

A tiny V4.1 checkpoint (``tiny_v41_config``) with larger Engram tables (``--engram-vocab``: each table has
24 primes above it, so ~24 x that many rows) is written to a temp dir in the official layout. Each run loads it
with one placement, prefills a random prompt in chunks of ``--chunk`` tokens and decodes ``--decode`` greedy
steps, after a short warm-up drive on another prompt. Reported: tokens/s over the whole drive, distinct rows per token (what a lookup touches), rows fetched
per token from the tier's backing store (disk: cache misses read from the file), cache hit rate, the time spent
gathering, and how long the forward waited for rows (with prefetch only the part not hidden behind compute).
Every run's logits are checked bit-identical to the device tier's.

    PYTHONPATH=. .venv/bin/python bench/engram_tiers.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from v4stack.config.engram_placement import BYTES_PER_MIB, EngramPlacement, row_bytes
from v4stack.model.decode_loop import prefill_then_decode
from v4stack.modelio.loader import load_model
from v4stack.modelio.writer import tiny_v41_config, write_v41_checkpoint

RUNS = (("device", True), ("host", True), ("host", False), ("disk", True), ("disk", False))


def drive(model, prompt: torch.Tensor, chunk: int, decode: int) -> tuple[torch.Tensor, float]:
    """Chunked prefill then greedy decode -> (logits of every step [n, V], seconds)."""
    state, logits = model.new_state(), []

    def forward(pieces: list[torch.Tensor]):
        out = model(state, pieces[0])
        logits.append(out.logits)  # every forward's, prefill chunks included
        return out

    seconds = sum(s.seconds for s in prefill_then_decode(forward, [prompt], decode + 1, chunk=chunk))
    return torch.cat(logits), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engram-vocab", type=int, default=20000, help="engram_vocab_size of the written checkpoint")
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    ap.add_argument("--chunk", type=int, default=128, help="prefill chunk")
    ap.add_argument("--decode", type=int, default=32, help="decode steps")
    ap.add_argument("--cache-mb", type=float, default=1.0, help="disk tier row-cache budget (MiB)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared, oversubscribed CPU two-thread OpenMP regions stall)")
    ap.add_argument("--quick", action="store_true", help="small run (prompt 128, 8 decode steps)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.prompt, args.decode = 128, 8
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_v41_checkpoint(Path(tmp), tiny_v41_config(engram_vocab_size=args.engram_vocab), seed=1)
        prompt, warmup = torch.randint(3, 512, (args.prompt,)), torch.randint(3, 512, (16,))
        base = None
        print(f"prompt {args.prompt} (chunks of {args.chunk}), {args.decode} decode steps, disk cache "
              f"{args.cache_mb:g} MiB")
        print(f"{'tier':<6} {'fetch':<9} {'tok/s':>7} {'distinct/tok':>12} {'fetched/tok':>11} {'hit rate':>8} "
              f"{'gather s':>8} {'waited s':>8}  bit-identical")
        for tier, prefetch in RUNS:
            placement = EngramPlacement(tier, int(args.cache_mb * BYTES_PER_MIB), prefetch)
            model = load_model(ckpt, progress=False, engram=placement)
            if base is None:
                cfg = model.cfg.engram
                mib = sum(cfg.num_embeddings) * row_bytes(cfg.head_dim) / BYTES_PER_MIB
                print(f"tables: {list(cfg.num_embeddings)} rows x {row_bytes(cfg.head_dim)} B = {mib:.1f} MiB")
            drive(model, warmup, args.chunk, 2)  # first-call costs (allocator, thread start) out of the figures
            model.engram_rows.stats.reset()
            logits, seconds = drive(model, prompt, args.chunk, args.decode)
            base = logits if base is None else base
            s, tokens = model.engram_rows.stats, args.prompt + args.decode
            distinct = s.cache_hits + s.rows_fetched if tier == "disk" else s.distinct_rows
            hits = f"{s.cache_hits / distinct:.2f}" if tier == "disk" else "-"
            print(f"{tier:<6} {'prefetch' if prefetch else 'on-demand':<9} {tokens / seconds:>7.1f} "
                  f"{s.distinct_rows / tokens:>12.1f} {s.rows_fetched / tokens:>11.1f} {hits:>8} "
                  f"{s.fetch_seconds:>8.3f} {s.wait_seconds:>8.3f}  {bool(torch.equal(logits, base))}")
            model.engram_rows.close()


if __name__ == "__main__":
    main()
