"""The bundled demo model states one context limit (issue 8): config.json's ``max_position_embeddings``,
tokenizer_config.json's ``model_max_length`` and the model card agree, and what the card says about the
YaRN parameters (frequency parameters inherited from V4, not a longer context) is true of v4stack's RoPE."""

import json
import re
from dataclasses import replace

import torch

from v4stack.config.default_model import BUNDLED_MODELS, DEMO_NAME
from v4stack.config.model_config import ModelConfig
from v4stack.model.attention import rope_spec_for
from v4stack.model.rope import inverse_frequencies

DEMO = BUNDLED_MODELS / DEMO_NAME
COMPRESSED_RATIO = 4  # any ratio > 0: the layers that use YaRN
LIMIT_RE = re.compile(r"Context limit: ([\d,]+) tokens")
YARN_RE = re.compile(r"factor ([\d.]+), original length ([\d,]+)\)")
RANGE_RE = re.compile(r"any original length from ([\d,]+) to ([\d,]+) gives bit-identical frequencies")


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _card() -> str:
    return (DEMO / "README.md").read_text()


def _freqs(cfg: ModelConfig, original: int) -> torch.Tensor:
    spec = rope_spec_for(cfg, COMPRESSED_RATIO)
    return inverse_frequencies(replace(spec, original_len=original))


def test_config_tokenizer_config_and_card_state_one_context_limit():
    cfg = ModelConfig.from_file(DEMO / "config.json")
    tokenizer_config = json.loads((DEMO / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == cfg.max_position_embeddings
    stated = LIMIT_RE.findall(_card())
    assert [_number(s) for s in stated] == [cfg.max_position_embeddings], stated


def test_card_quotes_the_config_yarn_parameters():
    cfg = ModelConfig.from_file(DEMO / "config.json")
    m = YARN_RE.search(_card())
    assert m is not None, "the card does not state the YaRN parameters"
    assert float(m.group(1)) == cfg.rope_scaling.factor
    assert _number(m.group(2)) == cfg.rope_scaling.original_max_position_embeddings


def test_card_range_of_equivalent_yarn_lengths_is_exact():
    """The card's range of YaRN original lengths with bit-identical frequencies holds at both ends and
    stops there; restating YaRN as (limit / factor) x factor would change the trained model's rotations."""
    cfg = ModelConfig.from_file(DEMO / "config.json")
    m = RANGE_RE.search(_card())
    assert m is not None, "the card does not state the range"
    low, high = _number(m.group(1)), _number(m.group(2))
    trained = _freqs(cfg, cfg.rope_scaling.original_max_position_embeddings)
    assert low <= cfg.rope_scaling.original_max_position_embeddings <= high
    assert torch.equal(_freqs(cfg, low), trained) and torch.equal(_freqs(cfg, high), trained)
    assert not torch.equal(_freqs(cfg, low - 1), trained) and not torch.equal(_freqs(cfg, high + 1), trained)
    restated = int(cfg.max_position_embeddings / cfg.rope_scaling.factor)
    assert not torch.equal(_freqs(cfg, restated), trained)
