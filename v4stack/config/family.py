"""One config parser for the whole family: a ``config.json`` -> ``ModelConfig`` (V4) or ``V41Config`` (V4.1).

The architecture is chosen from the file itself (``architectures`` / ``model_type`` / a nested
``text_config``); the loader, the planner and the checkpoint writer all parse configs through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Union

from v4stack.config.model_config import ConfigError, ModelConfig
from v4stack.config.v41_config import ARCHITECTURE as V41_ARCHITECTURE
from v4stack.config.v41_config import V41Config

AnyConfig = Union[ModelConfig, V41Config]


def is_v41(raw: Mapping[str, Any]) -> bool:
    """True for a DeepSeek-V4.1 config dict (its architecture, model type or nested text config says so)."""
    return (V41_ARCHITECTURE in (raw.get("architectures") or []) or str(raw.get("model_type", "")) == "deepseek_v41"
            or "text_config" in raw)


def parse_config(raw: Mapping[str, Any]) -> AnyConfig:
    """A config dict -> the frozen config of its architecture (ConfigError naming the key otherwise)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a JSON object, found {type(raw).__name__}")
    return V41Config.from_dict(raw) if is_v41(raw) else ModelConfig.from_dict(raw)


def read_config_json(path: str | Path) -> dict[str, Any]:
    """The raw dict of ``path`` (a config.json or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no config.json") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> AnyConfig:
    """Parse ``path``; ``overrides`` (text-config field -> value) are applied after validation of the file."""
    cfg = parse_config(read_config_json(path))
    if overrides:
        if not isinstance(cfg, V41Config):
            raise ConfigError("config overrides are only supported for DeepSeek-V4.1 configs")
        cfg = cfg.with_overrides(**dict(overrides))
    return cfg
