"""v4stack: one inference stack for the DeepSeek-V4 model family.

Layers (see docs/architecture.md): config -> weights -> ops/platforms -> model -> runtime -> cli.
"""

__version__ = "0.1.0"

# The CPU libraries' process settings (envs.LIBRARY_DEFAULTS) must be in the environment before torch's first
# oneDNN/MKL call; every entry point (CLI, engine, benches, tests) imports this package before running a GEMM.
from v4stack import envs as _envs  # noqa: E402

try:
    _envs.apply_library_defaults()
except ValueError:  # a bad V4STACK_LIBRARY_DEFAULTS: the libraries keep theirs; the CLI reports it (exit 2)
    pass
