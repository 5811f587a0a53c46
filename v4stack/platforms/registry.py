"""Platforms by name, imported lazily so a missing vendor runtime never breaks ``import v4stack``."""

from __future__ import annotations

import importlib

from v4stack.platforms.base import Platform

# name -> (module, class). Ascend ("npu", torch_npu fused ops) is planned; see docs/architecture.md.
PLATFORMS = {"cpu": ("v4stack.platforms.cpu", "CpuPlatform"), "cuda": ("v4stack.platforms.cuda", "CudaPlatform")}


def get_platform(name: str) -> Platform:
    if name not in PLATFORMS:
        raise ValueError(f"unknown platform {name!r}; known: {sorted(PLATFORMS)}")
    module, cls = PLATFORMS[name]
    platform = getattr(importlib.import_module(module), cls)()
    if not platform.is_available():
        raise ValueError(f"platform {name!r} is not available in this process")
    return platform


def available_platforms() -> list[str]:
    out = []
    for name in PLATFORMS:
        try:
            get_platform(name)
            out.append(name)
        except (ValueError, ImportError):
            continue
    return out
