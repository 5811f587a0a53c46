"""bench/prefill_profile.py's timers on a tiny checkpoint: every entry the prefill calls is charged, nested entries
only once, and the wrapped model still computes the same logits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from v4stack.config.numerics import Numerics
from v4stack.model import ForwardBatch
from v4stack.modelio.loader import load_model

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("prefill_profile", ROOT / "bench" / "prefill_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_charges_the_prefill_to_its_entries(tiny_checkpoint):
    bench = _bench()
    model = load_model(tiny_checkpoint, Numerics.fast_kernels(), progress=False)
    ids = torch.arange(3, 40)
    want = model(ForwardBatch.build([model.new_state()], [ids])).logits
    total, rows = bench.profile(model, 37, repeats=1)
    names = {name: (s, n) for name, s, n in rows}
    for entry in ("sparse_attention", "linear", "moe_experts", "rms_norm"):  # rms_norm: held by the norm modules
        assert names[entry][1] > 0 and names[entry][0] >= 0, entry
    assert rows[-1][0] == "(outside the table)" and abs(sum(s for _, s, _ in rows) - total) < 1e-9
    assert sum(s for name, s, _ in rows[:-1]) <= total + 1e-9  # nested entries are not charged twice
    assert torch.equal(model(ForwardBatch.build([model.new_state()], [ids])).logits, want)  # timers change nothing
