"""A second, independent oracle: HF transformers' ``DeepseekV4ForCausalLM`` on random official-layout checkpoints.

The golden data pins v4stack to the official reference on two fixed cases; this module checks other shapes and
seeds against an implementation written by other people (transformers 5.23, CPU, fp32, eager attention), which
reproduces the reference's fp32 no-QAT numerics to ~6e-6 (../shared/golden/v4/README.md, "transformers").

How transformers reads the official layout (no translation is needed, so none is done here):
  * config.json: ``DeepseekV4Config.__post_init__`` folds the official keys ``compress_ratios`` -> ``layer_types``,
    ``num_hash_layers`` -> ``mlp_layer_types``, ``qk_rope_head_dim`` -> ``partial_rotary_factor`` and
    ``rope_scaling`` (YaRN) -> ``rope_parameters["compress"]``; ``expert_dtype`` moves into the
    ``quantization_config``.
  * tensor names: ``conversion_mapping.py["deepseek_v4"]`` renames the official names (``layers.N.attn.wq_a`` ->
    ``model.layers.N.self_attn.q_a_proj``, ...) and merges ``experts.E.w{1,3}`` into ``gate_up_proj``; the FP8
    quantizer renames ``X.scale`` -> ``X.weight_scale_inv``; ``mtp.*`` is ignored (transformers has no MTP).
  * FP8/FP4 weights: ``FineGrainedFP8Config(dequantize=True)`` dequantises at load (``Fp8Dequantize``, which also
    unpacks the int8 FP4 experts). On a CPU-only machine transformers switches to dequantize by itself; we pass it
    explicitly so the oracle is the same on a CUDA machine (where it would otherwise keep FP8 kernels). Loading with
    ``dtype=float32`` keeps the fp32 tensors (hc_*, ape, attn_sink, gate.bias) unrounded; the dequantised FP8/FP4
    values are exact in any float dtype.

Known transformers quirks (golden README), and how the cases avoid them:
  * CPU FP8 dequantisation is wrong for FP8 weights whose dims are not multiples of 128 -> every case keeps them
    multiples of 128 (asserted by ``_check_fp8_dims``).
  * indexer ties are broken in CPU ``torch.topk`` order (v4stack: lower index first, like CUDA). Entries whose
    index score is exactly 0.0 (all head ReLUs zero) tie, and with few indexer heads that happens every few rows
    (4 heads: one entry in 16) -> the cases use 16 indexer heads, and the test asserts that every top-k boundary
    of the indexer and of the MoE router has a clear gap (``MIN_GAP``) before comparing, so a failure of the
    logit check is never a tie artefact.
  * no QAT and no MTP -> v4stack runs ``Numerics.exact_fp32()`` and only the main model is compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

transformers = pytest.importorskip("transformers", minversion="5.23")

from v4stack.config.numerics import Numerics  # noqa: E402
from v4stack.model import ForwardBatch  # noqa: E402
from v4stack.modelio.writer import tiny_config, write_checkpoint  # noqa: E402
from v4stack.modelio.loader import load_model  # noqa: E402

MAX_ABS = 1e-4  # golden README: fp32 implementations agree to ~6e-6; plausible bugs move logits by >= 1e-2
MIN_GAP = 1e-5  # smallest allowed score gap at a top-k boundary (fp32 score noise between the two is ~1e-6)


@dataclass(frozen=True)
class Case:
    name: str
    overrides: dict
    seed: int
    prompt_len: int
    decode_steps: int
    num_shards: int = 1
    notes: str = ""


CASES = [
    # V4-Flash-like: window, CSA, HCA layers, 2 hash layers (tiny_config's schedule). 150 % 4 = 2: partial CSA
    # group; crosses the 128 window; HCA has 1 entry.
    Case("flash_tiny", dict(index_n_heads=16), seed=11, prompt_len=150, decode_steps=3),
    # The golden flash_like schedule and widths: (0,0,4,128,4,128 | MTP 0), hc 3, 4 heads. 253 % 4 = 1; decode
    # positions 253..257 close the 2nd HCA group (position 255) and a CSA group.
    Case("flash_golden_shape", dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=4, q_lora_rank=256,
                                    compress_ratios=(0, 0, 4, 128, 4, 128, 0), hc_mult=3, hc_sinkhorn_iters=10,
                                    index_n_heads=16, index_topk=16), seed=5, prompt_len=253, decode_steps=5),
    # V4-Pro-like: layers 0 and 1 are HCA, 3 hash layers (the first two are HCA layers), hc 4 with 20 Sinkhorn
    # iterations, 6 experts top-3, head_dim 256, o_groups 2, checkpoint in 3 shards. 254 % 4 = 2; decode positions
    # 254..257 close the 2nd HCA group.
    Case("pro_like", dict(hidden_size=256, num_attention_heads=2, head_dim=256, q_lora_rank=128, o_groups=2,
                          o_lora_rank=64, compress_ratios=(128, 128, 4, 128, 0), num_hash_layers=3, hc_mult=4,
                          hc_sinkhorn_iters=20, n_routed_experts=6, num_experts_per_tok=3,
                          routed_scaling_factor=2.5, index_n_heads=16, index_topk=24),
         seed=2, prompt_len=254, decode_steps=4, num_shards=3),
    # The released head shape (head_dim 512, rope 64) with index_topk above the number of visible entries (every
    # visible entry is chosen; slots past them are -1). 300 = 75 full CSA groups, 2 HCA entries + 44 open rows.
    Case("head512_topk_all", dict(head_dim=512, index_topk=128), seed=23, prompt_len=300, decode_steps=4),
]


@dataclass
class Recorder:
    """Forward hooks on the transformers model: indexer choices and top-k gaps of indexer and router."""

    indexer_out: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # layer -> per call [S, k]
    indexer_gaps: list[tuple[float, str]] = field(default_factory=list)
    router_gaps: list[tuple[float, str]] = field(default_factory=list)
    positions: torch.Tensor | None = None  # positions of the current call

    def attach(self, hf) -> None:
        for i, layer in enumerate(hf.model.layers):
            comp = layer.self_attn.compressor
            indexer = getattr(comp, "indexer", None)
            if indexer is not None:
                indexer.register_forward_hook(self._on_indexer(i))
                indexer.scorer.register_forward_hook(self._on_scores(i, indexer.compress_rate, indexer.index_topk))
            if not layer.mlp.is_hash:
                layer.mlp.gate.register_forward_hook(self._on_router(i))

    def _on_indexer(self, layer: int):
        def hook(module, args, out):
            self.indexer_out.setdefault(layer, []).append(out[0].clone())
        return hook

    def _on_scores(self, layer: int, ratio: int, topk: int):
        def hook(module, args, scores):  # scores [1, S, N] over all compressed entries
            scores = scores[0].float()
            visible = (self.positions + 1) // ratio
            for row, (s, vis) in enumerate(zip(scores, visible.tolist())):
                if vis > topk:
                    top = s[:vis].topk(topk + 1).values
                    self.indexer_gaps.append(((top[-2] - top[-1]).item(),
                                              f"indexer layer {layer} position {int(self.positions[row])}"))
        return hook

    def _on_router(self, layer: int):
        def hook(module, args, out):
            biased = module.score_fn(out[0].float()) + module.e_score_correction_bias.float()
            top = biased.topk(module.top_k + 1, dim=-1).values
            gaps = top[:, -2] - top[:, -1]
            row = int(gaps.argmin())
            self.router_gaps.append((gaps[row].item(), f"router layer {layer} position {int(self.positions[row])}"))
        return hook


def _load_transformers(directory):
    from transformers import DeepseekV4ForCausalLM, FineGrainedFP8Config

    model, info = DeepseekV4ForCausalLM.from_pretrained(
        str(directory), dtype=torch.float32, attn_implementation="eager", device_map="cpu",
        quantization_config=FineGrainedFP8Config(dequantize=True), output_loading_info=True)
    problems = {k: v for k, v in info.items() if k != "unexpected_keys" and v}
    unexpected = [k for k in info.get("unexpected_keys", ()) if not k.startswith("mtp.")]
    assert not problems and not unexpected, f"transformers could not load the official layout: {problems} {unexpected}"
    return model.float().eval()


def _check_fp8_dims(v4) -> None:
    for name, t in v4.state_dict().items():
        if t.dtype == torch.float8_e4m3fn:
            assert all(d % 128 == 0 for d in t.shape), (
                f"{name} {list(t.shape)}: transformers' CPU FP8 dequantisation is wrong for dims that are not "
                f"multiples of 128; change the case")


def _check_hf_config(hf, cfg) -> None:
    """The official keys arrived: per-layer attention/MoE types, rope dims, YaRN on compressed layers."""
    kinds = {0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"}
    c = hf.config
    assert c.layer_types == [kinds[r] for r in cfg.compress_ratios[:cfg.num_hidden_layers]]
    assert c.mlp_layer_types == ["hash_moe" if cfg.is_hash_layer(i) else "moe" for i in range(cfg.num_hidden_layers)]
    assert c.qk_rope_head_dim == cfg.qk_rope_head_dim
    assert c.rope_parameters["compress"]["rope_type"] == "yarn"
    assert c.rope_parameters["compress"]["factor"] == cfg.rope_scaling.factor
    assert c.rope_parameters["main"]["rope_type"] == "default"


def _check_gaps(rec: Recorder) -> None:
    for what, gaps in (("indexer", rec.indexer_gaps), ("router", rec.router_gaps)):
        if not gaps:  # no row had more visible entries than index_topk (or no layer routes by score)
            continue
        gap, where = min(gaps)
        assert gap > MIN_GAP, (f"near tie at the {what} top-k boundary ({where}: gap {gap:.3g}); the two "
                               f"implementations may legitimately choose differently there: pick another seed")


def _compare_choices(v4_trace: dict, rec: Recorder, call: int, what: str) -> list[str]:
    bad = []
    for layer, outs in rec.indexer_out.items():
        ours, theirs = v4_trace[(layer, 0)], outs[call]
        for row in range(ours.shape[0]):
            a = {int(x) for x in ours[row] if x >= 0}
            b = {int(x) for x in theirs[row] if x >= 0}
            if a != b:
                bad.append(f"{what} layer {layer} row {row}: v4stack-only {sorted(a - b)}, "
                           f"transformers-only {sorted(b - a)}")
    return bad


def _diff(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, torch.Tensor]:
    return (ours - theirs).abs().max().item(), (ours.argmax(-1) != theirs.argmax(-1)).nonzero().flatten()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_transformers(case: Case, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(**case.overrides)
    directory = write_checkpoint(tmp_path / case.name, cfg, seed=case.seed, num_shards=case.num_shards)
    v4 = load_model(directory, Numerics.exact_fp32(), progress=False)
    _check_fp8_dims(v4)
    hf = _load_transformers(directory)
    _check_hf_config(hf, cfg)
    rec = Recorder()
    rec.attach(hf)

    L = case.prompt_len
    ids = torch.randint(3, cfg.vocab_size, (L + case.decode_steps,), generator=torch.Generator().manual_seed(case.seed))
    failures, choices = [], []  # logit mismatches; indexer choices that differ (reported after the logits)

    # prefill: logits of every prompt position
    state, trace = v4.new_state(), {}
    ours = v4(ForwardBatch.build([state], [ids[:L]], trace=trace), logit_rows=torch.arange(L)).logits
    rec.positions = torch.arange(L)
    with torch.no_grad():
        out = hf(input_ids=ids[None, :L], use_cache=True)
    cache = out.past_key_values
    max_abs, flips = _diff(ours, out.logits[0].float())
    _check_gaps(rec)
    choices += _compare_choices(trace, rec, 0, "prefill")
    if max_abs > MAX_ABS or flips.numel():
        failures.append(f"prefill: max |d| {max_abs:.3g}, argmax differs at positions {flips.tolist()[:10]}")

    # teacher-forced decode, one token at a time on both caches
    for step in range(case.decode_steps):
        pos = L + step
        trace = {}
        ours = v4(ForwardBatch.build([state], [ids[pos:pos + 1]], trace=trace)).logits[0]
        rec.positions = torch.tensor([pos])
        with torch.no_grad():
            out = hf(input_ids=ids[None, pos:pos + 1], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        _check_gaps(rec)
        choices += _compare_choices(trace, rec, step + 1, f"decode position {pos}")
        max_abs, flips = _diff(ours, out.logits[0, -1].float())
        if max_abs > MAX_ABS or flips.numel():
            failures.append(f"decode position {pos}: max |d| {max_abs:.3g}, argmax differs: {bool(flips.numel())}")

    report = failures + [f"indexer choices differ on {len(choices)} rows, e.g."] + choices[:8] if choices else failures
    assert not report, f"{case.name}: v4stack (exact_fp32) vs transformers:\n" + "\n".join(report)
