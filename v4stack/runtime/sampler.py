"""Next-token sampling: greedy at temperature 0, otherwise softmax(logits / T) with optional top-p."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from v4stack.engine.sampling_params import SamplingParams

GENERATION_CONFIG = "generation_config.json"  # HF convention; vLLM takes its defaults from it too


def checkpoint_sampling_defaults(model_dir: Path) -> dict:
    """``temperature`` / ``top_p`` recommended by the checkpoint's generation_config.json ({} if none)."""
    path = Path(model_dir) / GENERATION_CONFIG
    if not path.exists():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    return {k: float(cfg[k]) for k in ("temperature", "top_p") if k in cfg}


class Sampler:
    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)

    def __call__(self, logits: torch.Tensor) -> int:
        """logits [V] fp32 -> one token id."""
        p = self.params
        if p.temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / p.temperature, dim=-1)
        if p.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < p.top_p  # always keeps the top token
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=self.generator))
