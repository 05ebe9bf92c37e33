"""Peak memory of generate_masks for 200 vs 2,000 images: it must be bounded by the batch.

Runs ``python -m wsss.generate_masks`` on synthetic eval splits of 200 and 2,000 images (same
classifier, same settings) as child processes and reads each one's peak resident set size from
the kernel (``wait4``'s ru_maxrss). The ratio should be close to 1 (target: at most 1.2).

    python scripts/bench_memory.py               # about 5 minutes on 2 CPU cores
    python scripts/bench_memory.py --crf         # with the dense CRF (its workers are children
                                                 # of the run, so they are not in its peak)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import save_result  # scripts/, beside this file

from wsss.data.synthetic import SyntheticSpec, ensure_synthetic_dataset
from wsss.io import default_cache_dir

SETTINGS = ["dataset.image_size=128", "dataset.num_train=0", "export.overlays=16"]


def peak_rss_mib(args: list[str], cwd: Path) -> float:
    """Run ``python -m wsss.generate_masks args`` and return its peak RSS in MiB."""
    command = [sys.executable, "-m", "wsss.generate_masks", *args]
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[200, 2000])
    parser.add_argument("--crf", action="store_true")
    parser.add_argument("--train-images", type=int, default=400, help="for the classifier")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wsss-memory-"))
    train = [f"hydra.run.dir={work / 'train'}", f"dataset.num_train={args.train_images}",
             "dataset.num_eval=50", "train.epochs=1"]  # fmt: skip
    subprocess.run([sys.executable, "-m", "wsss.train", *train], cwd=work, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoint = work / "train" / "checkpoint.pt"
    peaks = []
    for n in args.sizes:
        # generate the dataset first (where the run looks for it), so that is not measured
        spec = SyntheticSpec(num_train=0, num_eval=n, image_size=128, seed=0)
        ensure_synthetic_dataset(default_cache_dir() / "datasets", spec)
        run = [*SETTINGS, f"dataset.num_eval={n}", f"checkpoint={checkpoint}"]
        run += ["crf=dense"] if args.crf else []
        peaks.append(peak_rss_mib([*run, f"hydra.run.dir={work / f'run{n}'}"], work))
        print(f"{n:>6} images: peak RSS {peaks[-1]:.0f} MiB", flush=True)
    print(f"ratio {args.sizes[1]} / {args.sizes[0]} images: {peaks[1] / peaks[0]:.3f}")
    figures = {"images": list(args.sizes), "peak_rss_mib": peaks, "ratio": peaks[1] / peaks[0],
               "crf": args.crf}  # fmt: skip
    print(f"figures: {save_result('bench_memory', figures, args.json)}")


if __name__ == "__main__":
    main()
