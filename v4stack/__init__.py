"""v4stack: one inference stack for the DeepSeek-V4 model family.

Layers (see docs/architecture.md): config -> weights -> ops/platforms -> model -> runtime -> cli.
"""

__version__ = "0.1.0"
