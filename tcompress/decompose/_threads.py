"""Running LAPACK calls on one thread.

The decompositions call LAPACK (``eigh``, ``qr``, ``svd``) only on small matrices: Gram matrices
of at most a few thousand rows and thin factors. Multi-threaded, such a call is a long sequence of
short parallel regions, each ending in a barrier; on a machine whose cores are shared with other
processes every barrier can wait for a descheduled thread, and the call becomes tens of times
slower (measured on 2 shared cores: ``eigh`` of a 128 x 128 matrix 884 ms on 2 threads, 1.5 ms on
one; ``qr`` of 12,288 x 64 451 ms against 16 ms). On one thread the same calls cost about what
they cost on an idle machine. The large products (Grams, projections) keep every thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["one_thread"]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(1)``, restoring the previous count after."""
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
