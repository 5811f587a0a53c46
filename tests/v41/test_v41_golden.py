"""The V4.1 model against the official reference's recorded outputs (../shared/golden/v41/tiny_a).

Bands are the README's "suggested acceptance criteria" (``v4stack.golden.v41_compare``); the compressed token
map and every Engram hash-id vector are exact. Every tensor of ``golden.safetensors`` and
``golden_alltopk.safetensors`` is either compared by a named check or is an input of the drive (asserted below,
so a tensor added to the golden files cannot go unchecked). Prefill, token-by-token decode and chunked prefill
must agree with each other to fp32 noise in the fp32 numerics.
"""

from __future__ import annotations

import pytest
import torch

from v4stack.golden.machine import golden_vector_math, vector_math_note
from v4stack.golden.v41_compare import ALLTOPK_BAND, TOPK_VALID_FIRST, compare_v41
from v4stack.golden.v41_runner import V41GoldenRunner

CASE = "tiny_a"
# golden tensors that drive the run rather than being compared (teacher-forced inputs and row positions);
# prompt_ids is also checked exactly against the ids the drive fed.
INPUTS = {"prompt_ids", "gen_ids", "prefill_logit_positions", "engram_extra_ids"}
# all-top-k: our engine follows the kernel semantics, so it sits well inside the README band (measured on the
# golden machines' vector math: min cosine 0.9992, argmax 28/31, mean |d| 0.053); a numerics regression of the
# size the band tolerates fails here. The cosine bound needs the golden machines' exp/sqrt bits
# (v4stack.golden.machine; an Intel Xeon gives 0.9970, mean |d| 0.071, argmax 27/31): elsewhere the README band.
ALLTOPK_TIGHT = dict(min_cosine=0.998, mean_abs=0.1, argmax=26 / 31)
# fp32 numerics: the three paths differ only by fp32 summation order (measured chunked vs prefill 5.7e-6)
FP32_PATHS_MAX_ABS = 5e-5


@pytest.fixture(scope="module")
def case_dir(golden_v41):
    return golden_v41 / CASE


def _failures(checks) -> list[str]:
    return [c.line() for c in checks if not c.ok]


def _covered(golden: dict, checks) -> list[str]:
    """Golden tensor names no check names (inputs excepted)."""
    names = " ".join(c.name for c in checks)
    return sorted(k for k in golden if k not in INPUTS and k.split(".")[0] not in names and k not in names)


@pytest.fixture(scope="module")
def reference_run(case_dir):
    runner = V41GoldenRunner(case_dir, "reference")
    return runner, runner.run("prefill")


def test_reference_golden_every_tensor_within_bands(reference_run):
    runner, run = reference_run
    checks = compare_v41(run, runner.golden, alltopk=False)
    assert not _failures(checks), "\n".join(_failures(checks))
    assert not _covered(runner.golden, checks), f"golden tensors not compared: {_covered(runner.golden, checks)}"
    names = {c.name for c in checks}
    # the first index source's top-k validity is required where the earlier layers' bits can match the golden's
    assert any(n.endswith("valid top-k (ties)") for n in names) == golden_vector_math(), vector_math_note()
    for layer in (1, 4):  # the exact vectors really ran
        assert {f"engram_hash_ids.layer{layer} exact", f"engram_hash_ids_decode.layer{layer} exact",
                f"engram_extra_hash_ids.layer{layer} exact"} <= names
    assert {"compressed map sha256", "compressed map classes"} <= names
    assert sum(n.startswith("prefill_layer_out[") for n in names) == runner.golden["prefill_layer_out"].shape[0]


def test_layer_streams_grow_smoothly(reference_run):
    """Per-layer stream error grows without a jump (a bug in one layer shows as one)."""
    runner, run = reference_run
    g = runner.golden
    diffs = [(mine.float() - g["prefill_layer_out"][i].float()).abs().mean().item()
             for i, mine in enumerate(run.prefill.layer_out)]
    # layer 0 sees bit-identical inputs: the attention/MoE kernels match the reference nearly exactly there
    assert diffs[0] < 0.01
    assert all(b < 3 * a + 0.01 for a, b in zip(diffs, diffs[1:])), diffs


def test_alltopk_logits_tight(case_dir):
    runner = V41GoldenRunner(case_dir, "reference", alltopk=True)
    run = runner.run("prefill")
    checks = compare_v41(run, runner.golden, alltopk=True)
    assert not _failures(checks), "\n".join(_failures(checks))
    assert not _covered(runner.golden, checks), f"golden tensors not compared: {_covered(runner.golden, checks)}"
    gold = runner.golden["logits"]
    cos = torch.nn.functional.cosine_similarity(run.logits, gold, dim=-1)
    argmax = (run.logits.argmax(-1) == gold.argmax(-1)).float().mean().item()
    mean_abs = (run.logits - gold).abs().mean().item()
    assert mean_abs <= ALLTOPK_TIGHT["mean_abs"], mean_abs
    assert argmax >= ALLTOPK_TIGHT["argmax"], argmax
    cos_limit = max(ALLTOPK_TIGHT["min_cosine"] if golden_vector_math() else 0.0, ALLTOPK_BAND.min_cosine)
    assert cos.min().item() >= cos_limit, (cos.min().item(), vector_math_note())


def test_fp32_prefill_decode_chunked_agree(case_dir):
    """One sequence along three paths in fp32 numerics: the 31 teacher-forced logit rows agree to fp32 noise,
    and the hash ids (exact in every mode) still match the golden vectors."""
    runner = V41GoldenRunner(case_dir, "fp32")
    runs = {path: runner.run(path, with_extras=False) for path in ("prefill", "decode", "chunked")}
    base = runs["prefill"].logits
    assert torch.isfinite(base).all()
    for path in ("decode", "chunked"):
        diff = (runs[path].logits - base).abs().max().item()
        assert diff <= FP32_PATHS_MAX_ABS, f"{path} vs prefill max |d| {diff:.3g}"
    # fp32 numerics are a different model from the reference (no QAT): far from bitwise, close in direction
    cos = torch.nn.functional.cosine_similarity(base, runner.golden["logits"], dim=-1)
    assert cos.min().item() > 0.9


def test_first_source_top_k_validity_is_required_with_the_golden_vector_math(reference_run):
    """The machine gate really switches the check: with the golden machines' vector math the first index source's
    validity is a required check at TOPK_VALID_FIRST, otherwise a reported one."""
    runner, run = reference_run
    for golden_math in (True, False):
        checks = compare_v41(run, runner.golden, alltopk=False, golden_math=golden_math)
        required = [c for c in checks if c.name.endswith("valid top-k (ties)")]
        assert len(required) == (1 if golden_math else 0)
        if golden_math:
            assert required[0].limit == TOPK_VALID_FIRST and required[0].name.startswith("prefill_topk_idxs.layer2")
