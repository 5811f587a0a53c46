"""Fast op-table entries for the ``fast`` numerics mode: the reference's quantisation points (FP8 activations,
FP8 KV, FP4 indexer q/k, bf16 attention probabilities) computed by few, large torch kernels on weights prepared
once at load, instead of the reference's exact-order block sums. Each entry keeps its reference's contract and is
checked against it by the parity harness (``tests/test_fast_ops.py``)."""

from v4stack.ops.fast.table import fast_ops

__all__ = ["fast_ops"]
