"""Images per second of each stage of generation on 448x448 images, so the slowest is visible.

Stages, each timed over the same images, in turn within every round (``_timing.interleaved``):

- load       read the PNG from disk (``load_image``)
- cam        the maps: CAM over scales 1.0/0.5/1.5/2.0 + flip, normalised (one image per batch)
- threshold  maps -> label map (``cam_to_label_map``)
- crf        dense CRF refinement, label mode, one process
- export     label PNG + COCO RLE annotations + the image's record, written to disk

The classifier is the demo's (trained and cached by ``python -m wsss.generate_masks``, or a
``--checkpoint``); its weights do not change the cost of any stage.

    python scripts/bench_pipeline.py            # about 2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _timing import interleaved  # scripts/, beside this file

from wsss.cams import ClassifierCam
from wsss.data import (
    SyntheticSpec,
    ensure_synthetic_dataset,
    load_image,
    load_split,
    save_label_map,
)
from wsss.export import coco_annotations
from wsss.io import default_cache_dir, write_json
from wsss.masks import CRFSettings, MaskPredictor, ThresholdSettings, crf_label_map
from wsss.models import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    checkpoint = args.checkpoint or next(
        iter(sorted((default_cache_dir() / "classifiers").glob("*/checkpoint.pt"))), None
    )
    if checkpoint is None:
        raise SystemExit("no cached classifier: run python -m wsss.generate_masks once first")
    model = load_checkpoint(checkpoint).model.to(args.device).eval()
    spec = SyntheticSpec(num_train=0, num_eval=args.images, image_size=args.size, seed=5)
    root = ensure_synthetic_dataset(default_cache_dir() / "datasets", spec)
    samples = load_split(root, "eval.csv").samples
    # The stages of MaskPredictor.predict, timed one by one (generate_masks's defaults).
    predictor = MaskPredictor(model, ClassifierCam(), ThresholdSettings(), CRFSettings())
    out = Path(tempfile.mkdtemp(prefix="wsss-bench-"))

    images = [load_image(s.image_path) for s in samples]
    cams: list = [None] * len(samples)
    label_maps: list = [None] * len(samples)

    def load():
        return [load_image(s.image_path) for s in samples]

    def cam():
        for i, (sample, image) in enumerate(zip(samples, images, strict=True)):
            cams[i] = predictor.maps([image], [sample.labels])[0]

    def threshold():
        for i, sample in enumerate(samples):
            label_maps[i] = predictor.rule.label_map(cams[i], sample.labels)

    def crf():
        for image, maps, sample in zip(images, cams, samples, strict=True):
            crf_label_map(image, maps, sample.labels, predictor.crf)

    def export():
        for i, sample in enumerate(samples):
            save_label_map(out / f"{sample.image_id}.png", label_maps[i])
            annotations = coco_annotations(label_maps[i], cams[i], sample.labels, i + 1)
            write_json(out / f"{sample.image_id}.json", {"annotations": annotations})

    cam(), threshold()  # inputs of the later stages
    stages = {"load": load, "cam": cam, "threshold": threshold, "crf": crf, "export": export}
    times, _ = interleaved(list(stages.values()), args.repeats)
    n = len(samples)
    total = sum(times)
    print(f"\n{n} images of {args.size}x{args.size}, {args.device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} rounds")  # fmt: skip
    print(f"{'stage':<10} {'img/s':>8} {'ms/img':>8} {'share':>6}")
    for name, seconds in zip(stages, times, strict=True):
        print(f"{name:<10} {n / seconds:>8.1f} {1000 * seconds / n:>8.1f} "
              f"{100 * seconds / total:>5.1f}%")  # fmt: skip
    slowest = max(zip(times, stages, strict=True))[1]
    print(f"all stages {n / total:>8.1f} img/s in one process; slowest: {slowest}")


if __name__ == "__main__":
    main()
