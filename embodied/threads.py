"""Torch's thread count for one piece of work, restored after it."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(threads: int | None):
    """Run the block on ``threads`` intra-op threads (None: leave the setting as it is). Small, memory-bound
    work (one decoded token, a few small clouds) is as fast on one thread, and a second OpenMP thread stalls
    the whole call whenever another process holds the other core."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
