"""Deterministic activation-memory probe: the peak bytes of tensor storage created and alive during a call.

Wall-clock RSS mixes the allocator's caching, glibc arenas and page reuse into the figure; this probe counts what
PyTorch itself allocates. Under :class:`ActivationProbe` (a ``TorchDispatchMode``) every op's output tensor whose
storage is new is charged its storage bytes until the last tensor on that storage (the tensor, or a view an op made
of it) is freed. Outputs that alias a storage created before the probe (weights, cache pools written in place, views
of them) cost nothing: they are not activations. The figure depends only on the ops run and their shapes, so a test
can compare it with a formula.

    with ActivationProbe() as probe:
        model(batch)
    probe.peak_bytes, probe.peak_op
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class ActivationProbe(TorchDispatchMode):
    """live_bytes / peak_bytes: storage bytes of tensors made under the probe; peak_op: the op whose output reached
    the peak (``aten`` name), for finding where a peak comes from."""

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self.peak_op = ""
        self._refs: dict[int, list[int]] = {}   # storage data_ptr -> [tensors alive on it, storage bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {self._key(t) for t in tree_flatten((args, kwargs or {}))[0] if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, inputs, func)
        return out

    @staticmethod
    def _key(t: torch.Tensor) -> int:
        return t.untyped_storage().data_ptr()

    def _track(self, t: torch.Tensor, inputs: set[int], func) -> None:
        key = self._key(t)
        if key == 0:                                   # empty storage
            return
        if key in self._refs:                          # a view or in-place result of an activation
            self._refs[key][0] += 1
        elif key in inputs:                            # aliases a tensor made before the probe (weight, pool)
            return
        else:
            nbytes = t.untyped_storage().nbytes()
            self._refs[key] = [1, nbytes]
            self.live_bytes += nbytes
            if self.live_bytes > self.peak_bytes:
                self.peak_bytes, self.peak_op = self.live_bytes, str(func)
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        ref = self._refs.get(key)
        if ref is None:
            return
        ref[0] -= 1
        if ref[0] == 0:
            self.live_bytes -= ref[1]
            del self._refs[key]
