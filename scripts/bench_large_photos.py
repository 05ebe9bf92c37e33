"""Peak memory of train, generate (with the CRF and the default scales) and explain on phone-sized
photos: 12 and 50 megapixels must go through in bounded memory (target: 12 MP under 4 GB).

For each size, a folder dataset of two JPEG photos of that size (synthetic scenes rendered at 512
pixels and resampled up, saved at quality 90 as a phone would) is run through the three commands
as child processes, with the recommended photo model (EfficientNet-Lite0, offline ImageNet
weights), and each command's peak resident set size is read from the kernel (``wait4``). The CRF
runs in the command's own process (``crf.workers=1``), so its memory is in the figure.

    python scripts/bench_large_photos.py                     # about 6 minutes on 2 CPU cores
    python scripts/bench_large_photos.py --sizes 4000x3000   # 12 MP only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import save_result  # scripts/, beside this file
from PIL import Image

from wsss.data.folder import write_labels_csv
from wsss.data.synthetic import CLASS_NAMES, SyntheticSpec, render_image


def make_photos(root: Path, width: int, height: int, count: int = 2) -> None:
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    rows = []
    for i in range(count):
        image, _, present = render_image(np.random.default_rng([5, i]), 512, SyntheticSpec())
        photo = Image.fromarray(image).resize((width, height), Image.BICUBIC)
        photo.save(root / "images" / f"photo{i}.jpg", quality=90)
        rows.append((f"photo{i}.jpg", [CLASS_NAMES[c] for c in present]))
    write_labels_csv(root / "train.csv", rows)
    write_labels_csv(root / "eval.csv", rows)


def peak_rss(module: str, args: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``python -m module args``; (seconds, peak RSS in MiB)."""
    command = [sys.executable, "-m", module, *args]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["4000x3000", "8160x6120"])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wsss-large-"))
    figures = {"model": args.model, "epochs": args.epochs, "sizes": {}}
    print(f"{'photo':>11} {'megapixels':>10} {'command':<15} {'seconds':>8} {'peak RSS':>10}")
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        root = work / size
        make_photos(root, width, height)
        data = ["dataset=folder", f"dataset.root={root}", f"model={args.model}"]
        checkpoint = root / "train" / "checkpoint.pt"
        commands = {
            "train": ("wsss.train", [*data, "train=finetune", f"train.epochs={args.epochs}",
                                     "val_split=null", f"hydra.run.dir={root / 'train'}"]),
            "generate_masks": ("wsss.generate_masks", [*data, f"checkpoint={checkpoint}",
                                                       "crf=dense", "crf.workers=1",
                                                       f"hydra.run.dir={root / 'masks'}"]),
            "explain": ("wsss.explain", [*data, f"checkpoint={checkpoint}",
                                         f"hydra.run.dir={root / 'explain'}"]),
        }  # fmt: skip
        measured = figures["sizes"][size] = {"megapixels": width * height / 1e6}
        for name, (module, command_args) in commands.items():
            seconds, rss = peak_rss(module, command_args, work)
            measured[name] = {"seconds": round(seconds, 1), "peak_rss_mib": round(rss)}
            print(
                f"{size:>11} {width * height / 1e6:>10.1f} {name:<15} {seconds:>8.1f} "
                f"{rss:>7.0f} MiB",
                flush=True,
            )
        mask = Image.open(root / "masks" / "masks" / "photo0.png")
        assert mask.size == (width, height), "masks are written at the photo's size"
    print(f"figures: {save_result('bench_large_photos', figures, args.json)}")


if __name__ == "__main__":
    main()
