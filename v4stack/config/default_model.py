"""The model used when no ``--model`` is given: the bundled demo checkpoint under ``models/``.

``models/v4-demo-shakespeare`` is a ~17M-parameter DeepSeek-V4 (window, CSA and HCA layers, hash and
noaux MoE, mHC, MTP) trained on Shakespeare by ``tools/train_demo.py`` and stored in the official layout
(FP8 e4m3 + UE8M0, FP4 experts); its model card is the folder's README. ``V4STACK_DEFAULT_MODEL`` points
elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from v4stack import envs

DEMO_NAME = "v4-demo-shakespeare"
BUNDLED_MODELS = Path(__file__).resolve().parents[2] / "models"  # repo root / models (source checkout)


def default_model_dir() -> Path:
    """The default checkpoint directory; FileNotFoundError (with what to do) if it is not there."""
    target = envs.default_model() or BUNDLED_MODELS / DEMO_NAME
    if not (target / "config.json").exists():
        raise FileNotFoundError(f"the default model is not at {target} (v4stack ships it in models/ of its "
                                f"source tree); pass --model DIR or set V4STACK_DEFAULT_MODEL")
    return target
