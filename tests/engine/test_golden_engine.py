"""The golden cases driven through the engine (scheduler, paged cache, sampler) instead of by hand."""

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import GOLDEN_CASES, golden_case
from tests.engine.engine_harness import make_engine, run_to_end
from v4stack.config.numerics import Numerics
from v4stack.engine.config import EngineConfig
from v4stack.engine.sampling_params import SamplingParams
from v4stack.golden.compare import FP32_MAX_ABS
from v4stack.golden.machine import golden_vector_math
from v4stack.model import ForwardBatch
from v4stack.modelio.loader import load_model


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_fp32_greedy_run_reproduces_the_golden_tokens_and_logits(case):
    path = golden_case(case)
    golden = load_file(str(path / "golden_fp32_noqat.safetensors"))
    model = load_model(path, Numerics.exact_fp32(), progress=False)
    engine, rec = make_engine(model, EngineConfig(numerics="fp32", enable_mtp=True))
    n = golden["generated_ids"].numel()
    out = run_to_end(engine, {"g": golden["prompt_ids"].tolist()}, SamplingParams(temperature=0, max_tokens=n,
                                                                                   ignore_eos=True))["g"]
    assert out.outputs[0].token_ids == golden["generated_ids"].tolist()  # 40/40 free-running greedy
    mine = torch.stack(rec.logits["g"])
    assert (mine - golden["step_logits"]).abs().max().item() <= FP32_MAX_ABS
    # the MTP block ran every step too: its draft for step i+1 should mostly be the token generated there
    assert engine.stats.mtp_drafts == n - 1 and engine.stats.mtp_accepted >= 0


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_reference_numerics_prefill_through_the_engine_is_bit_identical(case):
    """The engine's scheduler, paged cache and sampler change no bit of a reference-numerics prefill: its logits
    equal the model's own batch-1 prefill on every CPU, and the golden's where this machine's fp32 vector math is
    the golden machines' (v4stack.golden.machine; test_golden.py holds the model to the golden elsewhere)."""
    path = golden_case(case)
    golden = load_file(str(path / "golden.safetensors"))
    model = load_model(path, Numerics.reference(), progress=False)
    engine, rec = make_engine(model, EngineConfig(numerics="reference"))
    run_to_end(engine, {"g": golden["prompt_ids"].tolist()}, SamplingParams(temperature=0, max_tokens=1))
    direct = model(ForwardBatch.build([model.new_state()], [golden["prompt_ids"]])).logits[-1]
    assert torch.equal(rec.logits["g"][0], direct)
    if golden_vector_math():
        assert torch.equal(rec.logits["g"][0], golden["step_logits"][0])
