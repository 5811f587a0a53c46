"""Drive v4stack like the official reference on a golden case and collect what it computed.

A golden case folder (``../shared/golden/v4/README.md``) holds a tiny checkpoint and the reference's outputs.
The runner feeds the prompt through one of several execution paths, then decodes teacher-forced with the
golden's own ``generated_ids``:
  * ``prefill``  - one prefill of the prompt, then 1-token decodes (exactly the reference's drive);
  * ``decode``   - the prompt token by token (every position is a decode step);
  * ``chunked``  - the prompt in chunks whose boundaries cut compression groups and the 128-token window;
  * ``batched``  - the prompt and several of its prefixes as separate sequences of one forward, and the
                   decode steps batched with a second sequence that keeps prefilling in chunks.
Every path must reproduce the same logits within the golden tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from v4stack.config.numerics import Numerics
from v4stack.model import DeepseekV4, ForwardBatch, SequenceState
from v4stack.model.decode_loop import prefill_then_decode, v4_forward
from v4stack.modelio.loader import load_model
from v4stack.weights.checkpoint import CheckpointError, read_header

PATHS = ("prefill", "decode", "chunked", "batched")
CHUNK_SIZES = (3, 61, 7, 129, 100)  # cycled; cuts through 4-token groups, 128-token window and HCA groups
BATCHED_PREFIXES = (5, 129, 300)  # prefix lengths prefilled alongside the full prompt in the batched path
GOLDEN_FILES = {"fp32": "golden_fp32_noqat.safetensors", "reference": "golden.safetensors",
                "fast": "golden.safetensors"}  # fast numerics: the reference numerics on other kernels


@dataclass
class RunResult:
    """What v4stack produced for one golden file on one path (same row layout as the golden tensors)."""

    step_logits: torch.Tensor
    path: str = "prefill"
    prompt_logits: torch.Tensor | None = None
    prefix_logits: dict[int, torch.Tensor] = field(default_factory=dict)
    mtp_logits: torch.Tensor | None = None
    greedy_ids: torch.Tensor | None = None
    indexer_prefill: dict[int, torch.Tensor] = field(default_factory=dict)
    indexer_decode: dict[int, list[torch.Tensor]] = field(default_factory=dict)


class GoldenTensors(dict):
    """A golden file's tensors by name; a missing one is a data error naming the file (exit code 3 in the
    CLI), not a bare KeyError, since a golden file from another version may lack a tensor."""

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(tensors)
        self.path = path

    def __missing__(self, name: str) -> torch.Tensor:
        raise CheckpointError(f"{self.path}: golden file has no tensor '{name}' (incomplete or from another "
                              "version of the golden data)")


def read_golden(path: Path) -> GoldenTensors:
    """All tensors of one golden safetensors file (its header checked first: CheckpointError names it)."""
    read_header(path)
    return GoldenTensors(path, load_file(str(path)))


def load_golden(case_dir: Path, numerics_name: str) -> GoldenTensors:
    return read_golden(Path(case_dir) / GOLDEN_FILES[numerics_name])


def chunk_ids(ids: torch.Tensor, sizes=CHUNK_SIZES) -> list[torch.Tensor]:
    """ids cut into pieces of ``sizes`` (cycled), the chunked-prefill path's schedule."""
    out, i, k = [], 0, 0
    while i < ids.numel():
        out.append(ids[i:i + sizes[k % len(sizes)]])
        i += out[-1].numel()
        k += 1
    return out


class GoldenRunner:
    """Runs one case directory under one numerics mode ('fp32' or 'reference')."""

    def __init__(self, case_dir: str | Path, numerics_name: str) -> None:
        self.case_dir = Path(case_dir)
        self.numerics_name = numerics_name
        self.model: DeepseekV4 = load_model(self.case_dir, Numerics.from_name(numerics_name), progress=False)
        self.golden = load_golden(self.case_dir, numerics_name)
        self.indexer_layers = [i for i, b in enumerate(self.model.layers) if b.attn.indexer is not None]

    # ---- prompt ingestion per path --------------------------------------------------------------
    def _ingest(self, path: str, state: SequenceState, trace: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed the prompt; return (last-position logits [V], final streams [L, hc, D])."""
        ids = self.golden["prompt_ids"]
        if path == "prefill":
            out = self.model(ForwardBatch.build([state], [ids], trace=trace))
            return out.logits[0], out.hidden
        pieces = [ids[i:i + 1] for i in range(ids.numel())] if path == "decode" else chunk_ids(ids)
        hidden = []
        for piece in pieces:
            out = self.model(ForwardBatch.build([state], [piece]))
            hidden.append(out.hidden)
        return out.logits[0], torch.cat(hidden)

    def _ingest_batched(self, state: SequenceState, result: RunResult) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefill the prompt together with fresh sequences holding some of its prefixes."""
        ids = self.golden["prompt_ids"]
        prefixes = [n for n in BATCHED_PREFIXES if n < ids.numel()]
        states = [state] + [self.model.new_state() for _ in prefixes]
        out = self.model(ForwardBatch.build(states, [ids] + [ids[:n] for n in prefixes]))
        for n, logits in zip(prefixes, out.logits[1:]):
            result.prefix_logits[n] = logits
        return out.logits[0], out.hidden[: ids.numel()]

    # ---- full run -------------------------------------------------------------------------------
    def run(self, path: str, with_extras: bool = True) -> RunResult:
        """Teacher-forced run; ``with_extras`` adds prompt/prefix/MTP/indexer rows and a free greedy run."""
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}; choose from {PATHS}")
        g, model = self.golden, self.model
        gen = g["generated_ids"]
        state = model.new_state()
        trace: dict | None = {} if with_extras and path == "prefill" else None
        result = RunResult(step_logits=torch.empty(gen.numel(), g["step_logits"].shape[1]), path=path)
        if path == "batched":
            last, hidden = self._ingest_batched(state, result)
        else:
            last, hidden = self._ingest(path, state, trace)
        result.step_logits[0] = last
        mtp_state_hidden = hidden
        side = _SideSequence(model, g["prompt_ids"]) if path == "batched" else None
        decode_hidden = []
        for i in range(1, gen.numel()):
            step_trace: dict | None = {} if trace is not None else None
            states, chunks = [state], [gen[i - 1:i]]
            if side is not None and side.remaining():
                states.append(side.state)
                chunks.append(side.next_chunk())
            out = model(ForwardBatch.build(states, chunks, trace=step_trace))
            result.step_logits[i] = out.logits[0]
            if len(states) > 1:
                side.record(out.logits[1])
            decode_hidden.append(out.hidden[:1])
            if step_trace is not None:
                for layer in self.indexer_layers:
                    result.indexer_decode.setdefault(layer, []).append(step_trace[(layer, 0)])
        if side is not None:
            result.prefix_logits[side.length] = side.last_logits
        if trace is not None:
            result.indexer_prefill = {layer: trace[(layer, 0)] for layer in self.indexer_layers}
        if with_extras:
            self._extras(result, mtp_state_hidden, decode_hidden)
        return result

    def _extras(self, result: RunResult, prompt_hidden: torch.Tensor, decode_hidden: list[torch.Tensor]) -> None:
        g, model = self.golden, self.model
        ids, gen = g["prompt_ids"], g["generated_ids"]
        state = model.new_state()
        positions = g["prompt_positions"]
        result.prompt_logits = model(ForwardBatch.build([state], [ids]), logit_rows=positions).logits
        for n in g["prefix_lengths"].tolist():
            result.prefix_logits.setdefault(n, model(ForwardBatch.build([model.new_state()], [ids[:n]])).logits[0])
        if model.mtp:
            mtp = torch.empty(gen.numel(), result.step_logits.shape[1])
            state = model.new_state()
            next_ids = torch.cat([ids[1:], gen[:1]])
            mtp[0] = model.mtp_forward(ForwardBatch.build([state], [next_ids], is_mtp=True), prompt_hidden)[0]
            for i in range(1, gen.numel()):
                batch = ForwardBatch.build([state], [gen[i:i + 1]], is_mtp=True)
                mtp[i] = model.mtp_forward(batch, decode_hidden[i - 1])[0]
            result.mtp_logits = mtp
        result.greedy_ids = self.greedy(gen.numel())

    def greedy(self, steps: int) -> torch.Tensor:
        """Free-running greedy continuation of the prompt (prefill path)."""
        forward = v4_forward(self.model, [self.model.new_state()])
        return torch.cat([s.tokens for s in prefill_then_decode(forward, [self.golden["prompt_ids"]], steps)])


class _SideSequence:
    """A second sequence that prefills the prompt in small chunks while the main one decodes."""

    CHUNK = 37  # not a divisor of 4, 128 or the prompt length

    def __init__(self, model: DeepseekV4, ids: torch.Tensor) -> None:
        self.state, self.ids, self.done = model.new_state(), ids, 0
        self.length = min(ids.numel(), self.CHUNK * 8 + 3)
        self.last_logits: torch.Tensor | None = None

    def remaining(self) -> bool:
        return self.done < self.length

    def next_chunk(self) -> torch.Tensor:
        chunk = self.ids[self.done:min(self.done + self.CHUNK, self.length)]
        self.done += chunk.numel()
        return chunk

    def record(self, logits: torch.Tensor) -> None:
        self.last_logits = logits
