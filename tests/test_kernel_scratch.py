"""``ops.fast.kernels.scratch``: the C calls' reused work buffers are big enough, one per dtype, grown on demand, and
never shared between threads (two threads' kernels must not write one buffer)."""

import threading

import torch

from v4stack.ops.fast.kernels import scratch


def test_scratch_is_reused_grown_and_per_dtype():
    a = scratch(100, torch.float32)
    assert a.numel() >= 100 and a.dtype == torch.float32
    assert scratch(50, torch.float32).data_ptr() == a.data_ptr()  # a smaller call reuses it
    b = scratch(a.numel() + 1, torch.float32)
    assert b.numel() >= a.numel() + 1  # a larger one grows it
    assert scratch(10, torch.float64).data_ptr() != b.data_ptr()  # another dtype: its own buffer


def test_scratch_is_per_thread():
    mine = scratch(64, torch.float32).data_ptr()
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(scratch(64, torch.float32).data_ptr()))
    worker.start()
    worker.join()
    assert theirs and theirs[0] != mine
