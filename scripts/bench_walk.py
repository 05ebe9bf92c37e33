"""Time and peak memory of IRN's random walk (wsss.masks.random_walk) against the image size.

For each image size, a child process builds the affinities of a random boundary map at stride 4
(radius 5, as ``refine=irn`` runs it), walks 2 class maps plus background through the banded
transition matrix (one shifted multiply-add per offset) for ``2^exp_times`` steps, and reports
the time; its peak RSS (read from the kernel) is compared with a child that does everything
but the walk, so the difference is the walk's own memory. The dense n x n transition matrix
that IRN's code builds would need ``4 n^2`` bytes (n: pixels at stride 4); that figure is
arithmetic, not measured.

    python scripts/bench_walk.py                          # 500x375 (VOC) and 1000x750
    python scripts/bench_walk.py --sizes 500x375 2000x1500
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _results import save_result  # scripts/, beside this file


def child(height: int, width: int, walk: bool, exp_times: int) -> None:
    import torch

    from wsss.masks.random_walk import path_affinities, random_walk

    torch.manual_seed(0)
    h, w = -(-height // 4), -(-width // 4)
    boundary = torch.rand(1, 1, h, w) ** 4
    affinity, offsets = path_affinities(boundary, radius=5)
    maps = torch.rand(3, h, w)
    seconds = 0.0
    if walk:
        start = time.perf_counter()
        random_walk(maps, affinity[0], offsets, beta=10.0, exp_times=exp_times)
        seconds = time.perf_counter() - start
    print(seconds)


def run_child(args: list[str]) -> tuple[float, float]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(args)}: the child failed")
    return float(proc.stdout.read().strip()), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["500x375", "1000x750"])
    parser.add_argument("--exp-times", type=int, default=8, help="2^N steps (IRN: 8)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--walk", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    if args.child:
        width, height = map(int, args.child.split("x"))
        child(height, width, args.walk, args.exp_times)
        return

    print(f"| image | stride-4 grid | walk s ({2**args.exp_times} steps) | walk peak RSS "
          "| dense T would need |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    rows = []
    for size in args.sizes:
        width, height = map(int, size.split("x"))
        common = ["--child", size, "--exp-times", str(args.exp_times)]
        _, base_rss = run_child(common)
        seconds, walk_rss = run_child([*common, "--walk"])
        h, w = -(-height // 4), -(-width // 4)
        dense = 4 * (h * w) ** 2 / 2**30
        print(f"| {size} | {w}x{h} | {seconds:.2f} | +{walk_rss - base_rss:.0f} MiB "
              f"| {dense:.1f} GiB |")  # fmt: skip
        rows.append({"image": size, "grid": [h, w], "walk_seconds": seconds,
                     "walk_peak_rss_mib": walk_rss - base_rss, "dense_gib": dense})  # fmt: skip
    figures = {"steps": 2**args.exp_times, "rows": rows}
    print(f"figures: {save_result('bench_walk', figures, args.json)}")


if __name__ == "__main__":
    main()
