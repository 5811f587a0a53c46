"""How many intra-op threads to give torch on a CPU that other processes may be using.

torch's default (one thread per core) spins and waits at every op's barrier when the cores are busy with other
work; on a 2-core machine under load, 2 threads run slower than 1 (issue #10). The choice: the cores this process
may run on, minus the ones the load average says are taken, at least 1. ``V4STACK_THREADS`` (``envs.num_threads``)
overrides it.
"""

from __future__ import annotations

import os

from v4stack import envs


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def choose_threads(cores: int | None = None, load: float | None = None) -> int:
    """The thread count: V4STACK_THREADS when set, else cores - round(1-minute load average), in [1, cores].
    Pass ``cores``/``load`` to evaluate the rule without the machine (tests)."""
    override = envs.num_threads()
    if override:
        return override
    cores = usable_cores() if cores is None else cores
    load = os.getloadavg()[0] if load is None and hasattr(os, "getloadavg") else (load or 0.0)
    return max(1, min(cores, cores - round(load)))


def apply_thread_choice() -> int:
    """Set torch's intra-op thread count by ``choose_threads``; returns it."""
    import torch

    n = choose_threads()
    torch.set_num_threads(n)
    return n
