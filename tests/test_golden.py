"""The whole model against the official reference's recorded outputs (../shared/golden/v4).

Tolerances are the golden README's (see v4stack.golden.compare). Every execution path (prefill, token-by-
token decode, chunked prefill, batched) is checked in the smooth fp32 oracle mode to 1e-4 with identical
greedy tokens and indexer choices, and in the reference numerics (bf16 + QAT) statistically.
"""

import pytest

from tests.conftest import GOLDEN_CASES, golden_case
from v4stack.golden.compare import (SHORT_MAX_ABS, SHORT_PREFIX_MAX_LEN, SHORT_PROMPT_MAX_POS, compare_fp32,
                                    compare_reference)
from v4stack.golden.machine import golden_vector_math, vector_math_note
from v4stack.golden.runner import PATHS, GoldenRunner

_runners: dict = {}


def runner(case: str, mode: str) -> GoldenRunner:
    key = (case, mode)
    if key not in _runners:
        _runners[key] = GoldenRunner(golden_case(case), mode)
    return _runners[key]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_fp32_oracle(case, path):
    r = runner(case, "fp32")
    checks = compare_fp32(r.run(path, with_extras=(path == "prefill")), r.golden)
    failed = [c.line() for c in checks if not c.ok]
    assert not failed, "\n".join(failed)
    if path == "prefill":  # the extras really ran: prompt, prefix, MTP, greedy and indexer rows were compared
        names = {c.name for c in checks}
        assert {"prompt_logits max |d|", "mtp_logits max |d|", "greedy agreement"} <= names
        assert any(n.startswith("indexer layer") for n in names)


# Checks known to fail, asserted as such (so a fix shows up): none at present.
KNOWN_DEVIATIONS: dict[tuple[str, str], set[str]] = {}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_reference_numerics(case, path):
    r = runner(case, "reference")
    checks = compare_reference(r.run(path, with_extras=(path == "prefill")), r.golden)
    known = KNOWN_DEVIATIONS.get((case, path), set())
    failed = [c.line() for c in checks if not c.ok and c.name not in known]
    assert not failed, "\n".join(failed)
    for c in checks:
        if c.name in known:
            assert not c.ok, f"{c.name} now passes: remove it from KNOWN_DEVIATIONS"


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_reference_numerics_short_contexts_bit_exact(case):
    """Short contexts reproduce the reference's bf16/QAT numerics exactly on every CPU (QAT off would differ by
    0.3-1.7): fresh prefills of up to 8 tokens, and the rows at positions <= 16 of one full-prompt prefill."""
    import torch

    from v4stack.model import ForwardBatch

    r = runner(case, "reference")
    g, model = r.golden, r.model
    short = g["prompt_positions"] <= SHORT_PROMPT_MAX_POS
    out = model(ForwardBatch.build([model.new_state()], [g["prompt_ids"]]), logit_rows=g["prompt_positions"][short])
    assert torch.equal(out.logits, g["prompt_logits"][short])
    for i, n in enumerate(g["prefix_lengths"].tolist()):
        if n <= SHORT_PREFIX_MAX_LEN:
            logits = model(ForwardBatch.build([model.new_state()], [g["prompt_ids"][:n]])).logits[0]
            assert (logits - g["prefix_logits"][i]).abs().max() <= SHORT_MAX_ABS
            assert torch.equal(logits, g["prefix_logits"][i])


@pytest.mark.skipif(not golden_vector_math(), reason=vector_math_note())
@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_reference_numerics_full_prompt_bit_exact(case):
    """One full-prompt prefill reproduces every stored prompt row bit for bit, not only the short contexts. This
    needs the golden machines' fp32 exp/sqrt bits (v4stack.golden.machine: an Intel Xeon's MKL gives other bits
    from row 128 / 48 on); elsewhere test_reference_numerics holds these rows to the README's bands."""
    import torch

    from v4stack.model import ForwardBatch

    r = runner(case, "reference")
    g, model = r.golden, r.model
    out = model(ForwardBatch.build([model.new_state()], [g["prompt_ids"]]), logit_rows=g["prompt_positions"])
    assert torch.equal(out.logits, g["prompt_logits"])


def test_fast_numerics_prefill_path():
    """The fast numerics mode (the default of generate/engine/server) against the reference golden, by the same
    bf16 tolerances, on the smaller case's prefill path (every case and path: ``v4stack check-golden --numerics fast
    --paths all``, figures in docs/benchmarks.md)."""
    r = runner("flash_like", "fast")
    assert r.model.compute.ops.linear.__module__ == "v4stack.ops.fast.linear"  # really the fast table
    checks = compare_reference(r.run("prefill", with_extras=True), r.golden)
    failed = [c.line() for c in checks if not c.ok]
    assert not failed, "\n".join(failed)
