"""Cost of wsss's CRF step against a bare pydensecrf call, and the speed-up of 2 workers over 1.

Inputs are VOC-sized: synthetic scenes rendered at 448x448 (about VOC's 500x375 in pixels), with
maps made by blurring each object's true mask (CAM-like blobs that spill over edges). Both modes
are timed: ``label`` runs two CRFs per image (high and low threshold), ``soft`` one. The bare
call does exactly the pydensecrf work of the mode on the same inputs, with nothing around it.
All timings of one comparison alternate within each round, so machine drift hits them alike.

    python scripts/bench_crf.py            # about 3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _results import save_result  # scripts/, beside this file
from _timing import interleaved  # scripts/, beside this file
from scipy import ndimage

from wsss.data.synthetic import SyntheticSpec, render_image
from wsss.masks.crf import CRFSettings, crf_label_map, crf_label_maps, import_pydensecrf


def make_inputs(count: int, size: int) -> list[tuple[np.ndarray, np.ndarray, list[int]]]:
    inputs = []
    for i in range(count):
        image, labels, present = render_image(np.random.default_rng([11, i]), size, SyntheticSpec())
        cams = []
        for cls in present:
            blob = ndimage.gaussian_filter((labels == cls + 1).astype(np.float32), size / 40)
            cams.append(blob / max(blob.max(), 1e-6))
        inputs.append((image, np.stack(cams).astype(np.float32), present))
    return inputs


def bare_pydensecrf(image, cams, settings: CRFSettings) -> None:
    """The pydensecrf calls of one wsss refinement, and nothing else."""
    dcrf = import_pydensecrf()
    from pydensecrf.utils import unary_from_labels, unary_from_softmax

    height, width = image.shape[:2]
    n = len(cams) + 1
    scale = max(height, width) / settings.reference_size  # as wsss scales the kernel widths
    if settings.mode == "soft":
        probs = np.concatenate([(1 - cams.max(0, keepdims=True)) ** settings.alpha, cams])
        unaries = [unary_from_softmax(probs)]
    else:
        unaries = []
        for threshold in (settings.high_threshold, settings.low_threshold):
            padded = np.concatenate([np.full((1, height, width), threshold, np.float32), cams])
            hard = padded.argmax(0).reshape(-1)
            unaries.append(unary_from_labels(hard, n, settings.gt_prob, zero_unsure=False))
    for unary in unaries:
        crf = dcrf.DenseCRF2D(width, height, n)
        crf.setUnaryEnergy(np.ascontiguousarray(unary))
        crf.addPairwiseGaussian(sxy=settings.gaussian_sxy * scale, compat=settings.gaussian_compat)
        crf.addPairwiseBilateral(
            sxy=settings.bilateral_sxy * scale,
            srgb=settings.bilateral_srgb,
            rgbim=image,
            compat=settings.bilateral_compat,
        )
        np.array(crf.inference(settings.iterations)).reshape(n, height, width).argmax(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    figures: dict = {"images": args.images, "size": args.size, "modes": {}}
    inputs = make_inputs(args.images, args.size)
    print(
        f"{args.images} images of {args.size}x{args.size}, "
        f"{np.mean([len(c) for _, c, _ in inputs]):.1f} classes per image on average\n"
    )

    print(f"{'mode':<7}{'wsss s/img':>12}{'bare s/img':>12}{'overhead':>10}")
    for mode, extra in (("label", {}), ("soft", {"bilateral_sxy": 80, "bilateral_srgb": 13})):
        settings = CRFSettings(mode=mode, **extra)
        jobs = [(image, cams, classes, settings) for image, cams, classes in inputs]
        (ours, bare), _ = interleaved(
            [
                lambda jobs=jobs: [crf_label_map(*job) for job in jobs],
                lambda jobs=jobs: [bare_pydensecrf(image, cams, s) for image, cams, _, s in jobs],
            ],
            args.repeats,
        )
        print(
            f"{mode:<7}{ours / len(jobs):>12.3f}{bare / len(jobs):>12.3f}"
            f"{100 * (ours / bare - 1):>9.1f}%",
            flush=True,
        )
        figures["modes"][mode] = {"wsss_seconds_per_image": ours / len(jobs),
                                  "bare_seconds_per_image": bare / len(jobs),
                                  "overhead": ours / bare - 1}  # fmt: skip

    one_worker, two_workers = CRFSettings(workers=1), CRFSettings(workers=2)
    jobs = len(inputs)
    (one, two), _ = interleaved(
        [
            lambda: list(crf_label_maps(inputs, one_worker)),
            lambda: list(crf_label_maps(inputs, two_workers)),
        ],
        args.repeats,
    )
    print(
        f"\nlabel mode, {jobs} images: 1 worker {one:.2f} s, 2 workers {two:.2f} s, "
        f"speed-up {one / two:.2f}x (pool start-up included)"
    )
    figures["workers"] = {"one_seconds": one, "two_seconds": two, "speedup": one / two}
    print(f"figures: {save_result('bench_crf', figures, args.json)}")


if __name__ == "__main__":
    main()
