"""bench/decode_op_count.py on a tiny checkpoint: it counts the ops of the decode steps only (a step of a tiny
model dispatches dozens of ops), and its dump / compare tells equal
runs from different ones."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from v4stack.modelio.writer import tiny_config, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("decode_op_count", ROOT / "bench" / "decode_op_count.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(bench, monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["decode_op_count.py", *map(str, argv)])
    bench.main()
    return capsys.readouterr().out


def test_counts_decode_steps_and_compares_dumps(bench, tmp_path, monkeypatch, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt", tiny_config(), seed=0)
    out = _run(bench, monkeypatch, capsys, "--model", ckpt, "--prompt", 2, "--steps", 6, "--top", 3)
    head, *sites = out.strip().splitlines()
    per_step = float(head.split(": ")[-1].split()[0])
    assert "(2 steps)" in head and per_step > 20  # 6 forwards: the prefill and 3 warm-up steps are not counted
    assert len(sites) == 3 and all(".py:" in s for s in sites)
    a, b, c = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    for dump in (a, b):
        _run(bench, monkeypatch, capsys, "--model", ckpt, "--prompt", 2, "--steps", 3, "--dump", dump)
    assert bench.compare(a, b)
    changed = torch.load(a)
    changed["logits"][-1] = changed["logits"][-1].clone()
    changed["logits"][-1][0, 0] += 1.0
    torch.save(changed, c)
    assert not bench.compare(a, c)
    with pytest.raises(SystemExit) as done:
        _run(bench, monkeypatch, capsys, "--compare", a, c)
    assert done.value.code == 1
