"""``v4stack plan --engram TIER`` and the Engram placement of a loaded V4.1 model report the same table bytes per
tier (rows x (hd + hd/32)), for a written tiny checkpoint and for the released V4.1-Flash config."""

from __future__ import annotations

import json

import pytest

from v4stack.cli.main import main
from v4stack.config.engram_placement import TIERS, EngramPlacement
from v4stack.config.family import load_config
from v4stack.modelio.loader import load_model
from v4stack.modelio.writer import write_v41_checkpoint
from v4stack.planner.model_shape import PRESET_DIR, PRESETS

RELEASED_TABLE_BYTES = (384_006_168 + 384_016_682) * 264  # golden README: rows of layers 1 and 14, 264 B a row


def _plan_bytes(model: str, tier: str, capsys) -> dict[str, float]:
    """Per-tier Engram bytes of a one-device plan (disk: neither device nor host memory holds the table)."""
    code = main(["plan", "--model", model, "--hardware", "h200", "--devices", "1", "--engram", tier,
                 "--context", "1024", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code in (0, 1)  # 1: the released model does not fit one device; the memory figures are still there
    return {"device": out["engram_device_bytes"], "host": out["engram_host_bytes"]}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_v41_checkpoint(tmp_path_factory.mktemp("v41_plan"), seed=5)


@pytest.mark.parametrize("tier", TIERS)
def test_plan_matches_a_loaded_model(ckpt, tier, capsys):
    model = load_model(ckpt, progress=False, engram=EngramPlacement(tier))
    loaded = model.engram_rows.table_bytes()
    model.engram_rows.close()
    planned = _plan_bytes(str(ckpt / "config.json"), tier, capsys)
    assert planned["device"] == loaded["device"] and planned["host"] == loaded["host"]
    assert sum(loaded.values()) > 0 and loaded[tier] == sum(loaded.values())


@pytest.mark.parametrize("tier", TIERS)
def test_plan_matches_the_placement_for_v41_flash(tier, capsys):
    cfg = load_config(PRESET_DIR / PRESETS["v4.1-flash"])
    placed = EngramPlacement(tier).table_bytes(cfg.engram)
    assert placed[tier] == RELEASED_TABLE_BYTES
    planned = _plan_bytes("v4.1-flash", tier, capsys)
    assert planned["device"] == placed["device"] and planned["host"] == placed["host"]
