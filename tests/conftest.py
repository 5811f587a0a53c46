"""Shared fixtures: paths to the golden data and small random checkpoints in the official layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_V4 = ROOT.parent / "shared" / "golden" / "v4"
GOLDEN_CASES = ("flash_like", "pro_like")

torch.set_num_threads(min(2, torch.get_num_threads()))


def golden_case(name: str) -> Path:
    path = GOLDEN_V4 / name
    if not (path / "golden.safetensors").exists():
        pytest.skip(f"golden data not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A V4-Flash-shaped random checkpoint: window, CSA and HCA layers, hash layers, MTP."""
    from v4stack.modelio.writer import tiny_config, write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("tiny"), tiny_config(), seed=7)
