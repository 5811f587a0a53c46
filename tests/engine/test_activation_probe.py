"""engine/activation_probe.py counts exactly the storage bytes ops allocate while they are alive."""

import torch

from v4stack.engine.activation_probe import ActivationProbe

MIB = 1 << 20
ROWS, COLS = 1024, 256  # one fp32 [1024, 256] tensor is 1 MiB


def test_peak_counts_live_outputs_and_views_until_the_last_reference_dies():
    weight = torch.randn(COLS, COLS)
    with torch.inference_mode(), ActivationProbe() as probe:
        x = torch.randn(ROWS, COLS)          # 1 MiB live
        y = x @ weight                       # 2 MiB
        del x                                # 1 MiB
        flat = y.relu_().view(-1)            # in place and a view: same storage, still 1 MiB
        del y                                # the view keeps the storage: 1 MiB
        big = torch.empty(2 * ROWS, COLS)    # 3 MiB: the peak
        del big, flat
        assert probe.live_bytes == 0
    assert probe.peak_bytes == 3 * MIB
    assert probe.peak_op.startswith("aten.empty")


def test_writes_into_tensors_made_before_the_probe_cost_nothing():
    pool = torch.zeros(ROWS, COLS)
    rows = torch.arange(ROWS // 2)
    with torch.inference_mode(), ActivationProbe() as probe:
        pool.index_copy_(0, rows, torch.ones(ROWS // 2, COLS))  # the source is a 0.5 MiB activation
        pool[:4].add_(1.0)                                       # a view of the pool, written in place
    assert MIB // 2 <= probe.peak_bytes < MIB // 2 + 64  # + the scalar 1.0
    assert probe.live_bytes == 0
