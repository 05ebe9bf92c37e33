"""Timing shared by the benchmarks: compared things are timed in turn within each round."""

from __future__ import annotations

import statistics
import time


def interleaved(fns, repeats: int) -> tuple[list[float], list[object]]:
    """Median wall time of each function, timed in turn within every round (after one warm-up
    round), so that drift in machine speed hits all of them alike. Returns (times, results)."""
    results = [fn() for fn in fns]
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times], results
