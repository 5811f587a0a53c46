"""A/B of the attention, decode and small C kernels (csrc/prefill_attention.c, fast_kernels.c, decode_ops.c,
argmax.c) of this tree against those of a git revision, in one process on the CPU clock (1 thread, alternating
rounds, medians), on the shapes the real-shape checkpoint's 2K prefill and decode step and the demo model's 16-row
decode step give them. Each kernel runs through this tree's Python wrapper with the library swapped (the C
signatures are the same), both built with the fast table's flags (-march=native): on a CPU without AVX-512 this
compares the AVX2 paths with whatever the revision had there. It also checks that both give the same bits.

    PYTHONPATH=. .venv/bin/python bench/attention_kernels_ab.py [--baseline main] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from v4stack.ops.fast import argmax, decode_ops, kernels, prefill_attention
from v4stack.ops.fast.kernels import CFLAGS, compile_library

CSRC = "v4stack/ops/fast/csrc"
MODULES = {"prefill_attention": prefill_attention, "fast_kernels": kernels, "decode_ops": decode_ops,
           "argmax": argmax}
CALL_SECONDS = 0.02  # CPU time per timing: repeat a call up to about this, well above the clock's tick


def _baseline_libraries(rev: str, tmp: Path) -> dict:
    """The four libraries of git revision ``rev`` (every csrc file of it beside them: they include siblings), with
    this tree's ctypes signatures."""
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{CSRC}"], capture_output=True, text=True,
                           check=True).stdout.split()
    for name in names:
        (tmp / name).write_bytes(subprocess.run(["git", "show", f"{rev}:{CSRC}/{name}"], capture_output=True,
                                                check=True).stdout)
    libs = {}
    for stem, module in MODULES.items():
        lib, ours = compile_library(tmp / f"{stem}.c", CFLAGS, f"{stem}_ab"), module._library()
        if lib is None or ours is None:
            raise SystemExit(f"{stem}.c did not compile")
        for fn in dir(ours):
            if not fn.startswith("_") and hasattr(getattr(ours, fn), "argtypes"):
                getattr(lib, fn).argtypes = getattr(ours, fn).argtypes
        libs[stem] = lib
    return libs


@contextlib.contextmanager
def _using(stem: str, lib):
    module = MODULES[stem]
    native = module._library
    module._library = lambda cflags=CFLAGS: lib
    try:
        yield
    finally:
        module._library = native


def _cases():
    """(name, library stem, call) on seeded inputs."""
    g = torch.Generator().manual_seed(0)
    s, h, d, n, k = 256, 4, 512, 2600, 640  # 256 queries of the real shape's CSA layer: 128 window + 512 top-k
    q, kv = torch.randn(s, h, d, generator=g).bfloat16(), torch.randn(n, d, generator=g).bfloat16()
    idx = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(s)])
    sink = torch.randn(h, generator=g)
    yield ("prefill sparse attention 256 x 4 x 512, 640 slots", "prefill_attention",
           lambda: prefill_attention.sparse_attention(q, kv, idx, sink, d ** -0.5))
    for b, heads, dim, n0, n1 in ((16, 4, 128, 128, 32), (1, 4, 512, 128, 64)):  # demo 16 rows, real shape
        qq = torch.randn(b, heads, dim, generator=g).bfloat16()
        parts = [(torch.randn(4096, dim, generator=g).bfloat16(),
                  torch.stack([torch.randperm(4096, generator=g)[:m] for _ in range(b)])) for m in (n0, n1)]
        valid = torch.rand(b, n0 + n1, generator=g) < 0.9
        valid[:, 0] = True
        sk = torch.randn(heads, generator=g)
        yield (f"decode attention B={b} H={heads} d={dim} K={n0 + n1}", "fast_kernels",
               lambda qq=qq, parts=parts, valid=valid, sk=sk, dim=dim:
               kernels.decode_attention_pooled(qq, parts, valid, sk, dim ** -0.5))
    x = torch.randn(16384, 128, generator=g).bfloat16()  # the indexer's q of 256 tokens x 64 heads
    yield "fp4 quant 16384 x 128 bf16, blocks of 32", "fast_kernels", lambda: kernels.fp4_quant(x, 32)
    yield "hadamard 16384 x 128 bf16", "fast_kernels", lambda: kernels.hadamard_rotate(x)
    a = torch.randn(2048, 512, generator=g).bfloat16()  # a 2K prefill's activations of width 512
    yield "fp8 act quant 2048 x 512 bf16, blocks of 128", "fast_kernels", lambda: kernels.act_quant(a, 128)
    for t, heads, dim, groups, rank in ((16, 4, 128, 2, 64), (1, 4, 512, 2, 128)):
        o = torch.randn(t, heads, dim, generator=g).bfloat16()
        w = torch.randn(groups, rank, heads // groups * dim, generator=g).bfloat16()
        yield f"wo_a {t} x {heads} x {dim}, {groups} x {rank}", "decode_ops", lambda o=o, w=w: decode_ops.grouped_output(o, w)
    for b, heads, n_entries in ((16, 4, 64), (1, 64, 512)):
        qi = torch.randn(b, heads, 128, generator=g).bfloat16()
        wi = torch.randn(b, heads, generator=g).bfloat16()
        keys = torch.randn(b, n_entries, 128, generator=g).bfloat16()
        pos = torch.full((b,), 4 * n_entries, dtype=torch.int64)
        yield (f"decode index scores B={b} H={heads} N={n_entries}", "decode_ops",
               lambda qi=qi, wi=wi, keys=keys, pos=pos: decode_ops.decode_index_scores(qi, wi, keys, pos, 4))
    logits = torch.randn(1, 129280, generator=g)
    yield "argmax 1 x 129280", "argmax", lambda: argmax.argmax_rows(logits)


def _seconds(call, repeats: int) -> float:
    t0 = time.process_time()
    for _ in range(repeats):
        call()
    return (time.process_time() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="main")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        base = _baseline_libraries(a.baseline, Path(tmp))
        print(f"| kernel | {a.baseline} ms | this tree ms | same bits |\n|---|---|---|---|")
        for name, stem, call in _cases():
            with _using(stem, base[stem]):
                want = call()
            got = call()
            once = _seconds(call, 1)
            repeats = max(1, int(CALL_SECONDS / max(once, 1e-6)))
            times = {"base": [], "tree": []}
            for _ in range(a.rounds):
                with _using(stem, base[stem]):
                    times["base"].append(_seconds(call, repeats))
                times["tree"].append(_seconds(call, repeats))
            same = torch.equal(want.view(-1).view(torch.uint8) if want.dtype != torch.int64 else want,
                               got.view(-1).view(torch.uint8) if got.dtype != torch.int64 else got)
            print(f"| {name} | {1000 * statistics.median(times['base']):.3f} | "
                  f"{1000 * statistics.median(times['tree']):.3f} | {same} |")


if __name__ == "__main__":
    main()
