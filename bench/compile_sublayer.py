"""torch.compile (inductor, CPU) on one decode sublayer of the bundled model, against eager torch and the fast
table's one-call C entry: the attention input path (attention RMSNorm, wq_a -> q_norm -> wq_b -> per-head RMS ->
RoPE; wkv -> kv_norm -> RoPE) of layer 0, written in plain torch ops on dense bf16 copies of the FP8 weights.

Prints the eager and compiled CPU time per call at 1 and 16 rows, each shape's compile time (wall, and this
process's CPU: inductor compiles in worker processes) and the number of graphs, then the fast entry's time.

    PYTHONPATH=. .venv/bin/python bench/compile_sublayer.py
"""

from __future__ import annotations

import time

import torch

from v4stack.config.numerics import Numerics
from v4stack.modelio.loader import load_model
from v4stack.ops.fast import attention_qkv as fast_qkv

ROWS = (1, 16)  # batch-1 decode and a 16-stream step
REPS = 200
WARMUP = 5
FP8_MAX, AMAX_FLOOR, ACT_BLOCK = 448.0, 1e-4, 128  # the reference act quant (ops.reference.quant)


def act_quant(x: torch.Tensor) -> torch.Tensor:
    xb = x.float().unflatten(-1, (x.shape[-1] // ACT_BLOCK, ACT_BLOCK))
    scale = torch.exp2(torch.ceil(torch.log2(xb.abs().amax(-1, keepdim=True).clamp_min(AMAX_FLOOR) / FP8_MAX)))
    return ((xb / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * scale).flatten(-2).bfloat16()


def rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), w.float(), eps).to(x.dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rd = 2 * cos.shape[-1]
    pairs = x[..., -rd:].float().unflatten(-1, (-1, 2))
    re = pairs[..., 0] * cos - pairs[..., 1] * sin
    im = pairs[..., 0] * sin + pairs[..., 1] * cos
    return torch.cat([x[..., :-rd], torch.stack([re, im], -1).flatten(-2).to(x.dtype)], -1)


def make_sublayer(block):
    attn = block.attn
    w = {name: getattr(attn, name).dense_weight(torch.float32) for name in ("wq_a", "wq_b", "wkv")}
    eps, heads, d = attn.eps, attn.n_heads, attn.head_dim

    def sublayer(x, cos, sin):
        x = rms(x, block.attn_norm.weight, eps)
        qr = rms((act_quant(x).float() @ w["wq_a"].T).bfloat16(), attn.q_norm.weight, eps)
        q = (act_quant(qr).float() @ w["wq_b"].T).bfloat16().unflatten(-1, (heads, d))
        q = rope(q * torch.rsqrt(q.square().mean(-1, keepdim=True) + eps), cos[:, None], sin[:, None])
        kv = rope(rms((act_quant(x).float() @ w["wkv"].T).bfloat16(), attn.kv_norm.weight, eps), cos, sin)
        return q, kv, qr
    return sublayer


def per_call_us(fn, *args) -> float:
    for _ in range(WARMUP):
        fn(*args)
    t0 = time.process_time()
    for _ in range(REPS):
        fn(*args)
    return 1e6 * (time.process_time() - t0) / REPS


def main() -> None:
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch.set_num_threads(1)
    model = load_model("models/v4-demo-shakespeare", Numerics.from_name("fast"), progress=False)
    block = model.layers[0]
    sublayer = make_sublayer(block)
    compiled = torch.compile(sublayer, dynamic=False)
    rope_half = block.attn.rope_dim // 2
    for rows in ROWS:
        x, cos, sin = torch.randn(rows, model.cfg.hidden_size).bfloat16(), torch.randn(rows, rope_half), \
            torch.randn(rows, rope_half)
        print(f"rows {rows}: eager {per_call_us(sublayer, x, cos, sin):.1f} us/call")
        t0, c0 = time.perf_counter(), time.process_time()
        compiled(x, cos, sin)
        print(f"rows {rows}: compile {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU")
        print(f"rows {rows}: compiled {per_call_us(compiled, x, cos, sin):.1f} us/call")
        pos = torch.arange(100, 100 + rows)
        fast = lambda: fast_qkv.attention_qkv(block.attn, block.attn_norm(x), pos)  # noqa: E731
        print(f"rows {rows}: fast table one-call entry (+ attn_norm) {per_call_us(fast):.1f} us/call")
    print("graphs", counters["stats"].get("unique_graphs"))


if __name__ == "__main__":
    main()
