"""The DeepSeek-V4 model definition (math first, device-agnostic) and its per-sequence state."""

from v4stack.model.batch import ForwardBatch
from v4stack.cache.standalone import SequenceState
from v4stack.model.transformer import DeepseekV4, ModelOutput

__all__ = ["DeepseekV4", "ForwardBatch", "ModelOutput", "SequenceState"]
