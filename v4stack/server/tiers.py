"""Tiers: model names a client may ask for (``fast``, ``expert``, ``expert-max``) mapped to a checkpoint and a
chat mode. Pure configuration, read from a JSON file (the bundled default is ``tiers.json`` beside this module)::

    {"tiers": {"fast":   {"model": null, "thinking": false, "effort": null},
               "expert": {"model": "/ckpt/v4-pro", "thinking": true, "effort": "high"}}}

``model`` null means the checkpoint given to ``v4stack serve``; a path (relative paths are read from the tiers
file's folder) loads a second checkpoint, so one server can host one model for ``fast`` and another for
``expert``. ``effort`` is checked against the checkpoint's chat format when the server starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TIERS_FILE = Path(__file__).with_name("tiers.json")
TIER_KEYS = ("model", "thinking", "effort")


class TiersFileError(ValueError):
    """A tiers file that is missing or malformed; the one-line message names the file (CLI exit code 3)."""


@dataclass(frozen=True)
class Tier:
    """One tier: the checkpoint folder (None = the served one), thinking on/off and the reasoning effort."""

    name: str
    model: Path | None
    thinking: bool
    effort: str | int | None


def load_tiers(path: str | Path | None = None) -> tuple[Tier, ...]:
    """The tiers of a tiers file (default: the bundled one); TiersFileError with one line on a missing or malformed file."""
    path = Path(path) if path is not None else DEFAULT_TIERS_FILE
    if not path.is_file():
        raise TiersFileError(f"tiers file {path}: not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TiersFileError(f"tiers file {path}: not valid JSON ({exc})") from None
    tiers = data.get("tiers") if isinstance(data, dict) else None
    if not isinstance(tiers, dict) or not tiers:
        raise TiersFileError(f'tiers file {path}: expected {{"tiers": {{NAME: {{"model", "thinking", "effort"}}}}}}')
    return tuple(_tier(path, name, spec) for name, spec in tiers.items())


def _tier(path: Path, name: Any, spec: Any) -> Tier:
    where = f"tiers file {path}: tier {name!r}"
    if not isinstance(name, str) or not name.strip():
        raise TiersFileError(f"{where}: the name must be a non-empty string")
    if not isinstance(spec, dict) or set(spec) - set(TIER_KEYS):
        raise TiersFileError(f"{where}: expected an object with keys {', '.join(TIER_KEYS)}")
    model, thinking, effort = (spec.get(k) for k in TIER_KEYS)
    if model is not None and not isinstance(model, str):
        raise TiersFileError(f"{where}: model must be null or a checkpoint path")
    if not isinstance(thinking, bool):
        raise TiersFileError(f"{where}: thinking must be true or false")
    if effort is not None and (isinstance(effort, bool) or not isinstance(effort, (str, int))):
        raise TiersFileError(f"{where}: effort must be null, a name or an integer")
    model_dir = None if model is None else (path.parent / model).resolve()
    return Tier(name, model_dir, thinking, effort)
