"""Drive the V4.1 model like the official reference on a golden case (../shared/golden/v41/README.md).

Teacher-forced: feed ``prompt_ids``, then ``gen_ids[:30]`` one per step, collecting the 31 last-position logit
rows, and after each step the DSpark draft for the next token (``forward_spec``), its Markov chain teacher-forced
with the golden draft ids. The prompt goes in along one of the paths:
  * ``prefill``  one prefill (the reference's drive), plus the extras: per-layer streams, final pre-mix,
                 indexer selections and scores, DSpark inputs, and a second prefill over prompt + gen[:30] with
                 the head on every position (``prefill_logits`` / ``prefill_argmax``);
  * ``decode``   the prompt token by token;
  * ``chunked``  chunks that cut compression groups, candidate blocks and the 128-token window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from v4stack.config.numerics import Numerics
from v4stack.golden.runner import chunk_ids, read_golden
from v4stack.model.v41.engram_hash import load_compressed_token_map, map_sha256
from v4stack.model.v41.transformer import DeepseekV41, V41Output
from v4stack.modelio.loader import load_model

PATHS = ("prefill", "decode", "chunked")
CHUNK_SIZES = (3, 61, 7, 129, 100)  # odd sizes: cut ratio-2 groups, 8-entry candidate blocks and the window
GOLDEN_FILE, ALLTOPK_FILE = "golden.safetensors", "golden_alltopk.safetensors"
ALLTOPK_OVERRIDE = "config_alltopk_override.json"
EXTRA_HALVES = 2
TOKENIZER_DIR = "tokenizer"  # sibling of the case folders: tokenizer.json + compressed_token_map.safetensors


@dataclass
class V41Run:
    """What the model produced on one path (rows laid out like the golden tensors)."""

    path: str
    logits: torch.Tensor  # [31, V]
    draft_ids: torch.Tensor | None = None  # [30, 1 + B]
    draft_confidence: torch.Tensor | None = None  # [30, B]
    draft_logits_step1: torch.Tensor | None = None  # [B, V]
    hash_prompt: torch.Tensor | None = None  # [L, T, K]
    hash_decode: torch.Tensor | None = None  # [L, 30, K]
    hash_extra: torch.Tensor | None = None  # [L, 232, K]
    map_sha256: str = ""
    map_classes: int = 0
    prefill: V41Output | None = None  # the prompt prefill with every record (prefill path)
    main_hidden_decode1: torch.Tensor | None = None  # [n_t D]
    full_prefill_logits: torch.Tensor | None = None  # [T + 30, V]: one prefill over prompt + gen[:30]
    extras: dict = field(default_factory=dict)


class V41GoldenRunner:
    """One case directory; ``alltopk`` applies the case's override and reads ``golden_alltopk.safetensors``."""

    def __init__(self, case_dir: str | Path, numerics_name: str = "reference", alltopk: bool = False) -> None:
        import json

        self.case_dir, self.alltopk = Path(case_dir), alltopk
        overrides = json.loads((self.case_dir / ALLTOPK_OVERRIDE).read_text()) if alltopk else None
        self.model: DeepseekV41 = load_model(self.case_dir, Numerics.from_name(numerics_name), progress=False,
                                             config_overrides=overrides)
        self.cmap = load_compressed_token_map(self.tokenizer_dir())
        self.model.set_token_map(self.cmap)
        self.golden = read_golden(self.case_dir / (ALLTOPK_FILE if alltopk else GOLDEN_FILE))

    def tokenizer_dir(self) -> Path:
        own = self.case_dir / "tokenizer.json"
        return self.case_dir if own.exists() else self.case_dir.parent / TOKENIZER_DIR

    def run(self, path: str, with_extras: bool = True) -> V41Run:
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}; choose from {PATHS}")
        g, m = self.golden, self.model
        prompt, gen = g["prompt_ids"], g["gen_ids"]
        state = m.new_state()
        record = with_extras and path == "prefill"
        if path == "prefill":
            pieces = [prompt]
        elif path == "decode":
            pieces = [prompt[i:i + 1] for i in range(prompt.numel())]
        else:
            pieces = chunk_ids(prompt, CHUNK_SIZES)
        hidden = []
        for piece in pieces:
            out = m(state, piece, record=record)
            hidden.append(out.main_hidden)
        run = V41Run(path=path, logits=torch.empty(gen.numel(), m.cfg.vocab_size))
        run.logits[0] = out.logits[0]
        if record:
            run.prefill = out
        drafting = with_extras and m.mtp is not None and "dspark_draft_ids" in g
        if drafting:
            m.dspark_seed(state, torch.cat(hidden))
            drafts, confs = [], []
        for k in range(1, gen.numel()):
            out = m(state, gen[k - 1:k])
            run.logits[k] = out.logits[0]
            if drafting:
                if k == 1:
                    run.main_hidden_decode1 = out.main_hidden[0]
                d = m.draft(state, int(gen[k]), out.main_hidden, forced=g["dspark_draft_ids"][k - 1, 1:])
                drafts.append(torch.cat([gen[k:k + 1], d.ids]))
                confs.append(d.confidences)
                if k == 1:
                    run.draft_logits_step1 = d.logits
        if drafting:
            run.draft_ids, run.draft_confidence = torch.stack(drafts), torch.stack(confs)
        if with_extras:
            self._hashes(run)
            if path == "prefill" and "prefill_logits" in g:
                everything = torch.cat([prompt, gen[:-1]])
                run.full_prefill_logits = m(m.new_state(), everything,
                                            logit_rows=torch.arange(everything.numel())).logits
        return run

    def _hashes(self, run: V41Run) -> None:
        """Hash ids as the reference drive produces them: prompt, decode inputs, and the extra vector (a 116-token
        prefill then single steps), all from the token ids alone."""
        g, m = self.golden, self.model
        if m.cfg.engram is None or "engram_hash_ids.layer{}".format(m.cfg.engram.layer_ids[0]) not in g:
            return
        run.map_sha256, run.map_classes = map_sha256(self.cmap), int(self.cmap.max()) + 1
        state = m.new_state()
        run.hash_prompt = _advance_hashes(m, state, g["prompt_ids"])
        run.hash_decode = torch.cat([_advance_hashes(m, state, g["gen_ids"][k:k + 1]) for k in range(30)], dim=1)
        extra = g.get("engram_extra_ids")
        if extra is not None:
            state = m.new_state()
            first = extra.numel() // EXTRA_HALVES  # README: a 116-token prefill, then 116 single-token steps
            parts = [_advance_hashes(m, state, extra[:first])]
            parts += [_advance_hashes(m, state, extra[k:k + 1]) for k in range(first, extra.numel())]
            run.hash_extra = torch.cat(parts, dim=1)


def _advance_hashes(model: DeepseekV41, state, ids: torch.Tensor) -> torch.Tensor:
    """Hash ids of the next chunk, then move the state's Engram history on as a forward would."""
    hashed, compressed = model.hash_ids(state, ids)
    model.advance_engram_history(state, compressed)
    return hashed
