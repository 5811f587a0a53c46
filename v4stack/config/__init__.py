"""Configuration: the model's config.json (``model_config``) and how it is computed (``numerics``)."""

from v4stack.config.model_config import ConfigError, DSparkConfig, ModelConfig, QuantConfig, RopeScaling
from v4stack.config.numerics import Numerics

__all__ = ["ConfigError", "DSparkConfig", "ModelConfig", "Numerics", "QuantConfig", "RopeScaling"]
