"""Model <-> checkpoint: the one tensor inventory of each architecture and the loader that fills a model from
official files. Depends on ``config/``, ``model/`` and ``weights/`` (formats and files); nothing below imports it."""

from v4stack.modelio.inventory import build_model, checkpoint_spec, expected_tensors
from v4stack.modelio.loader import load_model

__all__ = ["build_model", "checkpoint_spec", "expected_tensors", "load_model"]
