"""Shared fixtures of the V4.1 tests: the golden case folder (found from the checkout, ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

GOLDEN_V41 = Path(__file__).resolve().parents[2].parent / "shared" / "golden" / "v41"


@pytest.fixture(scope="session")
def golden_v41() -> Path:
    if not (GOLDEN_V41 / "tiny_a" / "golden.safetensors").exists():
        pytest.fail(f"V4.1 golden data not found at {GOLDEN_V41}")
    return GOLDEN_V41
