"""The bundled demo checkpoint (models/v4-demo-shakespeare), measured through the path ``generate`` runs.

Its training run stored the held-out loss of the exported weights per window (eval/training_eval.json,
computed by the trainable twin in fp32); these tests re-measure it from the committed files.
"""

import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from v4stack.config.numerics import Numerics
from v4stack.config.default_model import BUNDLED_MODELS, DEMO_NAME, default_model_dir
from v4stack.modelio.writer import random_tensors
from v4stack.training.evaluate import held_out_loss, mtp_greedy_acceptance
from v4stack.modelio.loader import load_model

DEMO = BUNDLED_MODELS / DEMO_NAME
WINDOWS = 2  # of the 16 stored held-out windows (512 tokens each), each checked on its own
# bf16 activations + the reference's FP8/FP4 activation QAT points vs the fp32 training forward: the mean NLL
# moved by 0.0002 nats over all 16 windows (model card); 0.03 nats is 3% in perplexity
REFERENCE_TOLERANCE = 0.03
FP32_TOLERANCE = 1e-3  # same weights, same fp32 maths in another op order
MIN_ACCEPTANCE = 0.3  # MTP greedy acceptance on held-out prompts (the model card reports the full figure)


@pytest.fixture(scope="module")
def stored():
    evaluation = json.loads((DEMO / "eval" / "training_eval.json").read_text())
    windows = load_file(str(DEMO / "eval" / "held_out_windows.safetensors"))["windows"].long()
    return evaluation, windows[:WINDOWS]


@pytest.fixture(scope="module")
def reference_model():
    return load_model(default_model_dir(), Numerics.reference(), progress=False)


def test_default_model_is_the_bundled_checkpoint():
    assert default_model_dir() == DEMO
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size < 30 * 2**20
    header = load_file(str(DEMO / "model.safetensors"))
    assert header["layers.1.ffn.experts.0.w1.weight"].dtype == torch.int8  # FP4 experts, packed
    assert header["layers.1.attn.wq_a.weight"].dtype == torch.float8_e4m3fn
    assert header["layers.1.attn.wq_a.scale"].dtype == torch.float8_e8m0fnu


def test_held_out_loss_matches_training_time_evaluation(stored, reference_model):
    evaluation, windows = stored
    want = evaluation["held_out_nll_per_window"][:WINDOWS]
    got = held_out_loss(reference_model, windows).per_window
    assert all(abs(g - w) < REFERENCE_TOLERANCE for g, w in zip(got, want, strict=True)), (got, want)
    exact = held_out_loss(load_model(DEMO, Numerics.exact_fp32(), progress=False), windows).per_window
    assert all(abs(e - w) < FP32_TOLERANCE for e, w in zip(exact, want, strict=True)), (exact, want)


def test_trained_model_is_far_better_than_random_weights(stored, reference_model, tmp_path):
    _, windows = stored
    trained = held_out_loss(reference_model, windows[:1]).perplexity
    (tmp_path / "config.json").write_bytes((DEMO / "config.json").read_bytes())
    from safetensors.torch import save_file

    save_file(random_tensors(reference_model.cfg, seed=0), str(tmp_path / "model.safetensors"))
    random = held_out_loss(load_model(tmp_path, Numerics.reference(), progress=False), windows[:1]).perplexity
    assert trained * 10 < random, (trained, random)
    assert trained < math.exp(6.0)  # a 4,108-id vocabulary: uniform guessing is e^8.3


def test_mtp_block_drafts_are_accepted(stored, reference_model):
    _, windows = stored
    acc = mtp_greedy_acceptance(reference_model, [windows[i, :64] for i in range(2)], 24)
    assert acc.drafted == 2 * 23
    assert acc.rate > MIN_ACCEPTANCE, acc


def test_generate_without_model_argument_writes_text():
    res = subprocess.run([sys.executable, "-m", "v4stack.cli.main", "generate", "--prompt", "The king said",
                          "--max-tokens", "24", "--temperature", "0"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("The king said") and len(res.stdout.split()) > 6
    assert f"[{DEMO_NAME}]" in res.stderr and "24 tok generated" in res.stderr


# Lines of the held-out plays (Macbeth, The Tempest: never trained on) as user turns
CHAT_PROMPTS = ("Is this a dagger which I see before me?", "Where should this music be? i' the air or the earth?",
                "What bloody man is that?", "Good morrow, sir. What news from the court?")
CHAT_TOKENS = 64
MIN_CLOSED = 3  # of the 4 greedy Expert replies: a closed thinking block, then a non-empty answer


def _chat(model, thinking: bool) -> list:
    from v4stack.chat import V4, encode_messages, parse_completion
    from v4stack.engine.llm import LLM
    from v4stack.engine.llm_engine import LLMEngine
    from v4stack.engine.sampling_params import SamplingParams
    from v4stack.engine.tokenizer import Tokenizer

    tok = Tokenizer(DEMO)
    ids = [tok.encode(encode_messages([{"role": "user", "content": p}], fmt=V4, thinking=thinking), add_bos=False)
           for p in CHAT_PROMPTS]
    params = SamplingParams(temperature=0.0, max_tokens=CHAT_TOKENS, skip_special_tokens=False)
    outs = [r.outputs[0] for r in LLM(engine=LLMEngine(model, tok)).generate(ids, params, use_tqdm=False)]
    return [(o.text, parse_completion(o.text, fmt=V4, thinking=thinking, finish_reason=o.finish_reason)) for o in outs]


def test_expert_tier_thinks_then_answers_and_fast_answers_at_once(reference_model):
    """The chat fine-tune: greedy Expert (thinking mode) closes its thinking block and answers; Fast (chat
    mode) answers with no reasoning; the two tiers write different things."""
    expert, fast = _chat(reference_model, thinking=True), _chat(reference_model, thinking=False)
    closed = [m for text, m in expert if "</think>" in text and m.content.strip() and m.reasoning_content.strip()]
    assert len(closed) >= MIN_CLOSED, [text for text, _ in expert]
    assert all(m.content.strip() and not m.reasoning_content for _, m in fast), [text for text, _ in fast]
    assert [m.content for _, m in expert] != [m.content for _, m in fast]
