"""Engine flags shared by ``v4stack generate`` and ``v4stack serve`` (one definition, one mapping to
``EngineConfig``), vLLM's names where vLLM has the flag."""

from __future__ import annotations

import argparse

from v4stack.cli.args import float_arg, int_arg
from v4stack.config.engram_placement import BYTES_PER_MIB, DEFAULT_CACHE_MB, TIERS, EngramPlacement
from v4stack.engine.config import NUMERICS, CacheConfig, EngineConfig, SchedulerConfig
from v4stack.platforms.registry import PLATFORMS

BYTES_PER_GIB = 1 << 30


def add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--numerics", choices=NUMERICS, default="fast",
                   help="fast: bf16 + the official QAT simulation on fast kernels (default); reference: the same, "
                        "bit-exact in the official kernels' order (slow); fp32: exact, no simulation")
    p.add_argument("--platform", choices=tuple(PLATFORMS), default="cpu",
                   help="reference ops on that device (default cpu)")
    p.add_argument("--max-model-len", type=int_arg(1), default=None,
                   help="context limit in tokens (prompt + output); default and maximum: the model's "
                        "max_position_embeddings")
    p.add_argument("--max-num-seqs", type=int_arg(1), default=SchedulerConfig.max_num_seqs,
                   help=f"sequences per engine step (default {SchedulerConfig.max_num_seqs})")
    p.add_argument("--max-num-batched-tokens", type=int_arg(1), default=SchedulerConfig.max_num_batched_tokens,
                   help="tokens per engine step (prefill chunks are cut to it; default "
                        f"{SchedulerConfig.max_num_batched_tokens})")
    p.add_argument("--max-waiting-requests", type=int_arg(1), default=SchedulerConfig.max_waiting_requests,
                   help="requests queued beyond this are refused with 503 (default "
                        f"{SchedulerConfig.max_waiting_requests})")
    p.add_argument("--kv-cache-memory-gib", type=float_arg(0.0, lo_open=True), default=None,
                   help="KV-cache budget in GiB (default: 4 GiB or a quarter of free memory on CPU)")
    p.add_argument("--no-enable-prefix-caching", dest="enable_prefix_caching", action="store_false",
                   help="turn prefix caching off (default on)")
    p.add_argument("--enable-mtp", action="store_true", help="run the MTP block every step (default off)")
    p.add_argument("--engram", choices=TIERS, default="device",
                   help="V4.1: where the Engram tables live: device (default), host memory, or disk (read from "
                        "the checkpoint file through a row cache)")
    p.add_argument("--engram-cache-mb", type=int_arg(1), default=DEFAULT_CACHE_MB,
                   help=f"V4.1 disk tier: row-cache budget in MiB (default {DEFAULT_CACHE_MB})")
    p.add_argument("--engine-seed", type=int_arg(0), default=0, help="draws the seeds of requests that give none (default 0)")


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    """EngineConfig from the flags (flags ``add_engine_args`` did not add keep their defaults)."""
    memory = getattr(args, "kv_cache_memory_gib", None)
    return EngineConfig(
        numerics=args.numerics, platform=args.platform, max_model_len=getattr(args, "max_model_len", None),
        enable_mtp=getattr(args, "enable_mtp", False), seed=getattr(args, "engine_seed", 0),
        scheduler=SchedulerConfig(
            max_num_seqs=getattr(args, "max_num_seqs", SchedulerConfig.max_num_seqs),
            max_num_batched_tokens=getattr(args, "max_num_batched_tokens", SchedulerConfig.max_num_batched_tokens),
            max_waiting_requests=getattr(args, "max_waiting_requests", SchedulerConfig.max_waiting_requests)),
        cache=CacheConfig(memory_bytes=int(memory * BYTES_PER_GIB) if memory is not None else None,
                          enable_prefix_caching=getattr(args, "enable_prefix_caching", True)),
        engram=engram_placement_from_args(args))


def engram_placement_from_args(args: argparse.Namespace) -> EngramPlacement:
    """--engram / --engram-cache-mb (defaults where the command has no such flags)."""
    return EngramPlacement(tier=getattr(args, "engram", "device"),
                           cache_bytes=getattr(args, "engram_cache_mb", DEFAULT_CACHE_MB) * BYTES_PER_MIB)
