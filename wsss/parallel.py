"""Running a function over a stream of items in worker processes, in order, in bounded memory."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ordered_map(
    fn: Callable, items: Iterable, workers: int, max_pending: int | None = None
) -> Iterator:
    """``map(fn, items)`` in order, on ``workers`` processes, holding at most ``max_pending``
    items in flight so memory stays bounded however long ``items`` is. ``workers <= 1`` runs
    in this process."""
    if workers <= 1:
        yield from map(fn, items)
        return
    max_pending = max_pending or 4 * workers
    pending: deque[Future] = deque()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max_pending:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
