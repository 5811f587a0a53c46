"""Hardware platforms behind one interface: device, memory info and the op table the model calls.

Vendor code (Triton, torch_npu) lives in its own module here and is imported lazily by the registry,
never by the model.
"""

from v4stack.platforms.base import Platform
from v4stack.platforms.registry import available_platforms, get_platform

__all__ = ["Platform", "available_platforms", "get_platform"]
