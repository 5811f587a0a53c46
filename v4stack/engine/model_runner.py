"""Executes what the scheduler decided: the cache's pending tensor work, one forward over every scheduled
request's new tokens, sampling, and (with MTP on) the MTP block's forward. Makes no policy decisions.

Per step:
  1. cache ops: copy-on-write block copies, compressor rings restored from c4 tails (prefix hits);
  2. flat batch: request r contributes its known tokens of positions start..start+num_new-1; logits are taken at
     the last row of each request whose step reaches the end of its known tokens;
  3. sample those rows;
  4. MTP (optional): rows mtp_start..start+num_new-1 of each request pair the backbone's final streams with the
     *next* token id (the sampled one at the end); a request restarting after a prefix hit lags one row, whose
     streams come from the mtp_window block's kept ``hidden``. Its last-row argmax is the request's draft.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from v4stack.cache.tensors import CacheTensors
from v4stack.engine.sampler import SampledToken, Sampler
from v4stack.engine.scheduler import SchedulerOutput
from v4stack.model import DeepseekV4, ForwardBatch  # or DeepseekV41: the same forward(batch, logit_rows)


@dataclass
class StepResult:
    sampled: dict[str, SampledToken] = field(default_factory=dict)
    drafts: dict[str, int] = field(default_factory=dict)  # request id -> MTP draft of the token after next
    mtp_ran: bool = False


class ModelRunner:
    def __init__(self, model: DeepseekV4, tensors: CacheTensors, enable_mtp: bool) -> None:
        if enable_mtp and not model.mtp:
            raise ValueError("enable_mtp: this checkpoint has no MTP block")
        self.model, self.tensors, self.enable_mtp = model, tensors, enable_mtp
        self.sampler = Sampler(model.compute.ops.argmax)
        self.device = model.device

    def _apply_cache_ops(self, sched: SchedulerOutput) -> None:
        for group, src, dst in sched.cache_ops.copies:
            self.tensors.copy_block(group, src, dst)
        for slot, block, boundary in sched.cache_ops.restores:
            self.tensors.restore_compressor_tails(slot, block, boundary)

    def execute(self, sched: SchedulerOutput) -> StepResult:
        self._apply_cache_ops(sched)
        entries = sched.scheduled
        ids, starts, lengths, sample_rows, row = [], [], [], [], 0
        for e in entries:
            ids.extend(e.request.token_ids_between(e.start, e.start + e.num_new))
            starts.append(e.start)
            lengths.append(e.num_new)
            row += e.num_new
            if e.samples:
                sample_rows.append(row - 1)
        batch = ForwardBatch.from_cache(self.tensors, [e.request.cache for e in entries], starts,
                                        torch.tensor(ids, dtype=torch.long), lengths)
        if self.model.history_tokens:  # V4.1 Engram: the ids its n-grams reach before each chunk
            h = self.model.history_tokens
            batch.history = [e.request.token_ids_between(max(0, e.start - h), e.start) for e in entries]
        out = self.model(batch, logit_rows=torch.tensor(sample_rows, dtype=torch.long))
        samplers = [e for e in entries if e.samples]
        result = StepResult()
        if samplers:
            tokens = self.sampler(out.logits.cpu(), [e.request for e in samplers])
            result.sampled = {e.request.request_id: t for e, t in zip(samplers, tokens)}
        if self.enable_mtp:
            self._run_mtp(sched, batch, out.hidden, result)
            result.mtp_ran = True
        return result

    def _run_mtp(self, sched: SchedulerOutput, batch: ForwardBatch, hidden: torch.Tensor, result: StepResult) -> None:
        """MTP rows of positions mtp_start..start+num_new-1 for every scheduled request."""
        ids, starts, lengths, parts, draft_rows, row = [], [], [], [], [], 0
        block_size = self.tensors.specs.block_size
        for e, span in zip(sched.scheduled, batch.spans):
            req, end = e.request, e.start + e.num_new
            nxt = result.sampled[req.request_id].token_id if e.samples else req.token_ids_between(end, end + 1)[0]
            ids.extend(req.token_ids_between(e.mtp_start + 1, end) + [nxt])
            for p in range(e.mtp_start, e.start):  # lagging rows: their streams were kept at the block end
                if (p + 1) % block_size:
                    raise RuntimeError(f"MTP block lags at position {p}, which does not end a cache block")
                block = req.cache.block_tables["mtp_window"][p // block_size]
                kept = self.tensors.pool("mtp_window", "hidden", self.model.mtp[0].layer_id)[block]
                parts.append(kept.view(1, *hidden.shape[1:]))
            parts.append(hidden[span.begin:span.end])
            starts.append(e.mtp_start)
            lengths.append(end - e.mtp_start)
            row += end - e.mtp_start
            if e.samples:
                draft_rows.append((req.request_id, row - 1))
        mtp_batch = ForwardBatch.from_cache(self.tensors, [e.request.cache for e in sched.scheduled], starts,
                                            torch.tensor(ids, dtype=torch.long), lengths, is_mtp=True)
        rows = torch.tensor([r for _, r in draft_rows], dtype=torch.long)
        logits = self.model.mtp_forward(mtp_batch, torch.cat(parts), logit_rows=rows)
        result.drafts = {rid: int(t) for (rid, _), t in zip(draft_rows, logits.argmax(-1).tolist())}
