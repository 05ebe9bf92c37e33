"""How fast one VOC photo goes through wsss at the defaults, and how far that is from the machine.

For the photo (default: the first of VOC 2012 train) and a classifier checkpoint, all timed in
turn within each round (``scripts/_timing.py``), so that load on the machine hits every row alike:

1. **The forward passes of the maps** (scales 1.0 and 1.5 at the working resolution, each view
   batched with its mirror image): their FLOPs (counted by ``torch.utils.flop_counter``), and
   their time with each way of running the classifier: PyTorch eager (channels-last float32),
   bfloat16 autocast, ``torch.compile`` (``--compile``), ONNX Runtime and OpenVINO; the largest
   difference of each one's features from eager float32's; achieved GFLOP/s.
2. **The machine's own throughput**: a 2048^3 float32 GEMM and a 3x3 convolution of 256 channels
   at 112x112, in GFLOP/s, so each stage reads as a fraction of the hardware.
3. **The stages**: the maps (``MaskPredictor.maps`` at the defaults, the chosen backend), the
   threshold rule, the boundary map and IRN's random walk (``--affinity``: a boundary network;
   the walk also as the earlier sparse-matrix products, for the speed-up), the dense CRF (label
   mode, at the working resolution), superpixel averaging and writing (label PNG + COCO
   annotations); with ``--prototypes`` (LPCAM's, e.g. from a ``preset=photos`` run's cache),
   LPCAM's maps and ``preset=photos`` whole for the photo at the preset's settings (LPCAM maps,
   rule, CRF, the quality estimate's probes, writing).
4. **The peer**: pytorch-grad-cam's Grad-CAM (``pip install grad-cam``; for a GAP + linear head it
   is CAM up to scale) on the same views and classes, one call per class as its API takes them.

    python scripts/bench_speed.py --checkpoint runs/voc/train/checkpoint.pt \\
        --affinity runs/voc/affinity.pt --prototypes runs/voc/prototypes.pt \\
        --json results/bench_speed.json
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _results import save_result  # scripts/, beside this file
from _timing import interleaved
from PIL import Image

from wsss.cams import ClassifierCam
from wsss.cli.config import compose_config
from wsss.data import load_image
from wsss.data.voc import VOC_CLASSES
from wsss.export import coco_annotations
from wsss.io import write_json
from wsss.masks import (
    CRFSettings,
    IrnSettings,
    MaskPredictor,
    SuperpixelSettings,
    ThresholdSettings,
    at_working_size,
    working_size,
)
from wsss.masks.crf import crf_label_map
from wsss.masks.random_walk import path_affinities, random_walk
from wsss.models import load_checkpoint
from wsss.models.inference import AcceleratedClassifier

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO.parent / "shared" / "voc2012"


def photo(root: Path, image_id: str | None):
    """The photo (uint8 RGB) and its 0-based classes, read from VOC's masks."""
    ids = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    image_id = image_id or ids[0]
    image = load_image(root / "JPEGImages" / f"{image_id}.jpg")
    mask = np.asarray(Image.open(root / "SegmentationClass" / f"{image_id}.png"))
    classes = sorted(int(v) - 1 for v in np.unique(mask) if 0 < v < 255)
    return image_id, image, classes


def views(image: np.ndarray, cam: ClassifierCam) -> list[torch.Tensor]:
    """The forward passes' inputs: each scale's view with its mirror, as MaskPredictor does."""
    size = working_size(image.shape[:2], cam.max_side)
    small = at_working_size(image, cam.max_side)
    x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
    out = []
    for scale in cam.scales:
        shape = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        v = x if shape == size else F.interpolate(x, shape, mode="bilinear", align_corners=False)
        v = torch.cat([v, v.flip(-1)]) if cam.flip else v
        out.append(v.contiguous(memory_format=torch.channels_last))
    return out


def machine_gflops(repeats: int) -> dict[str, float]:
    """GFLOP/s of a large GEMM and a large convolution (float32), timed in turn."""
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 256, 112, 112).contiguous(memory_format=torch.channels_last)

    def gemm():
        return a @ b

    def convolution():
        with torch.inference_mode():
            return conv(x)

    (t_gemm, t_conv), _ = interleaved([gemm, convolution], repeats)
    conv_flops = 2 * 256 * 256 * 9 * 112 * 112
    return {"gemm": 2 * 2048**3 / t_gemm / 1e9, "conv3x3": conv_flops / t_conv / 1e9}


def forward_flops(model, inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        for v in inputs:
            model.forward_features(v)
    return counter.get_total_flops()


def engines(model, compile_too: bool) -> dict[str, object]:
    """Each way of computing the features: a callable images -> features."""
    found = {}

    def eager(x):
        with torch.inference_mode():
            return model.forward_features(x)

    def bf16(x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model.forward_features(x).float()

    found["PyTorch eager (float32, channels-last)"] = eager
    found["PyTorch bfloat16 autocast"] = bf16
    if compile_too:
        compiled = torch.compile(model.forward_features)

        def compiled_forward(x):
            with torch.inference_mode():
                return compiled(x)

        found["torch.compile (inductor)"] = compiled_forward
    for backend, label in (("onnxruntime", "ONNX Runtime"), ("openvino", "OpenVINO")):
        try:
            engine = AcceleratedClassifier(model, backend)
        except Exception as exc:  # not installed, or the export failed: say so, go on
            print(f"{label}: not measured ({type(exc).__name__}: {exc})")
            continue
        found[label] = engine.forward_features
    return found


def sparse_walk(maps, affinity, offsets, beta: float, exp_times: int) -> torch.Tensor:
    """The walk as wsss ran it before: a sparse CSR transition matrix, one product per step."""
    channels, height, width = maps.shape
    n = height * width
    index = torch.arange(n).view(height, width)
    rows, cols, values = [torch.arange(n)], [torch.arange(n)], [torch.ones(n)]
    for k, (dy, dx) in enumerate(offsets):
        ys, xs = slice(0, height - dy), slice(max(0, -dx), width - max(0, dx))
        source = index[ys, xs].reshape(-1)
        target = index[dy:height, max(0, dx) : max(0, dx) + xs.stop - xs.start].reshape(-1)
        value = affinity[k, ys, xs].reshape(-1).clamp_min(0) ** beta
        rows += [source, target]
        cols += [target, source]
        values += [value, value]
    rows, cols, values = torch.cat(rows), torch.cat(cols), torch.cat(values)
    values = values / torch.zeros(n).index_add_(0, cols, values)[cols]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_coo_tensor(torch.stack([cols, rows]), values, (n, n))
        matrix = matrix.coalesce().to_sparse_csr()
    x = maps.reshape(channels, -1).T.contiguous()
    for _ in range(2**exp_times):
        x = matrix @ x
    return x.T.reshape(channels, height, width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--affinity", type=Path, default=None, help="a boundary network")
    parser.add_argument("--prototypes", type=Path, default=None, help="LPCAM's prototypes.pt")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--image", default=None, help="a VOC image id (default: the first)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    image_id, image, classes = photo(args.root, args.image)
    classifier = load_checkpoint(args.checkpoint)
    model = classifier.model.eval().to(memory_format=torch.channels_last)
    cam = ClassifierCam()
    inputs = views(image, cam)
    flops = forward_flops(model, inputs)
    hardware = machine_gflops(args.repeats)
    print(f"{image_id} ({image.shape[1]}x{image.shape[0]}), classes "
          f"{[VOC_CLASSES[c] for c in classes]}; {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    print(f"machine: GEMM {hardware['gemm']:.0f} GFLOP/s, conv3x3 {hardware['conv3x3']:.0f} "
          f"GFLOP/s (float32)")  # fmt: skip
    print(f"forward passes of the maps: {len(inputs)} batches {[tuple(v.shape) for v in inputs]},"
          f" {flops / 1e9:.2f} GFLOP\n")  # fmt: skip

    found = engines(model, args.compile)
    timed = [lambda f=f: [f(v) for v in inputs] for f in found.values()]
    times, outputs = interleaved(timed, args.repeats)
    reference = outputs[0]
    forward_rows = []
    print("| features computed by | s/photo | x eager | GFLOP/s | % of GEMM | max rel. diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (name, _), seconds, out in zip(found.items(), times, outputs, strict=True):
        pairs = zip(out, reference, strict=True)
        diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in pairs)
        rate = flops / seconds / 1e9
        print(f"| {name} | {seconds:.3f} | {times[0] / seconds:.2f} | {rate:.1f} | "
              f"{100 * rate / hardware['gemm']:.1f}% | {diff:.1e} |")  # fmt: skip
        forward_rows.append({"engine": name, "seconds": seconds, "speedup": times[0] / seconds,
                             "gflops": rate, "max_relative_difference": diff})  # fmt: skip

    stages = stage_times(image, classes, model, cam, args)
    print("\n| stage (defaults) | s/photo |")
    print("| --- | --- |")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds:.3f} |")
    peer = peer_ratio(model, image, classes, cam, args.repeats)
    if peer:
        print(f"\nmaps: wsss {peer['wsss']:.3f} s, pytorch-grad-cam Grad-CAM {peer['peer']:.3f} s "
              f"on the same views: {peer['peer'] / peer['wsss']:.2f}x")  # fmt: skip
    figures = {
        "image": image_id, "size": list(image.shape[:2]), "threads": torch.get_num_threads(),
        "forward_gflop": flops / 1e9, "machine_gflops": hardware, "forward": forward_rows,
        "stages": stages, "peer": peer,
    }  # fmt: skip
    if "random walk (sparse CSR, before)" in stages:
        figures["walk_speedup"] = (
            stages["random walk (sparse CSR, before)"] / stages["random walk (banded, 256 steps)"]
        )
    if peer:
        figures["peer_ratio"] = peer["peer"] / peer["wsss"]
    print(f"\nfigures: {save_result('bench_speed', figures, args.json)}")


def stage_times(image, classes, model, cam, args) -> dict[str, float]:
    """Seconds per photo of each stage at the defaults, timed in turn."""
    predictor = MaskPredictor(model, cam, ThresholdSettings())
    size = working_size(image.shape[:2], cam.max_side)
    small = at_working_size(image, cam.max_side)
    maps = predictor.maps([image], [classes])[0]
    working = F.interpolate(torch.from_numpy(maps)[None], size, mode="bilinear", antialias=True)
    working = working[0].numpy()
    label_map = predictor.threshold.label_map(maps, classes)
    out = Path(tempfile.mkdtemp(prefix="wsss-speed-"))
    fns = {
        "maps (scales 1.0, 1.5 + flips)": lambda: predictor.maps([image], [classes]),
        "threshold rule (otsu)": lambda: predictor.threshold.label_map(maps, classes),
        "dense CRF (label mode, 2 runs)": lambda: crf_label_map(small, working, classes,
                                                                CRFSettings()),
        "superpixels (SLIC, 200 regions)": lambda: SuperpixelSettings().refine(
            small, working, classes),
        "writing (PNG + COCO)": lambda: write_outputs(out, label_map, maps, classes),
    }  # fmt: skip
    if args.prototypes:
        # the preset's own settings (conf/preset/photos.yaml), its quality probes included
        config = compose_config("generate_masks", ["preset=photos"])
        lpcam = replace(config.cam, prototypes=str(args.prototypes))
        preset = MaskPredictor(model, lpcam, config.mask, config.crf, refine=config.refine)

        def whole_preset():
            prediction = preset.predict(image, classes)
            if config.export.quality:
                preset.assess(image, prediction)
            write_outputs(out, prediction.mask, prediction.maps, classes)

        fns["LPCAM maps (scales 1.0, 1.5 + flips)"] = lambda: preset.maps([image], [classes])
        fns["preset=photos whole (LPCAM, rule, CRF, quality, writing)"] = whole_preset
    if args.affinity:
        irn = IrnSettings(checkpoint=str(args.affinity))
        edge = irn.boundary(small)
        seeds = F.interpolate(torch.from_numpy(working)[None], edge.shape, mode="bilinear",
                              antialias=True)[0] * (1 - edge)  # fmt: skip
        affinity, offsets = path_affinities(edge[None, None], irn.radius)
        fns["boundary map (image + mirror)"] = lambda: irn.boundary(small)
        fns["random walk (banded, 256 steps)"] = lambda: random_walk(
            seeds, affinity[0], offsets, irn.beta, irn.exp_times
        )
        fns["random walk (sparse CSR, before)"] = lambda: sparse_walk(
            seeds, affinity[0], offsets, irn.beta, irn.exp_times
        )
    times, _ = interleaved(list(fns.values()), args.repeats)
    return dict(zip(fns, times, strict=True))


def write_outputs(out: Path, label_map, maps, classes) -> None:
    from wsss.data.images import save_label_map

    save_label_map(out / "mask.png", label_map)
    write_json(out / "record.json", coco_annotations(label_map, maps, classes, 1))


def peer_ratio(model, image, classes, cam, repeats: int) -> dict | None:
    """Time of wsss's maps against pytorch-grad-cam's Grad-CAM on the same views."""
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        print("\npytorch-grad-cam not installed (pip install grad-cam): no peer comparison")
        return None
    predictor = MaskPredictor(model, cam)
    inputs = views(image, cam)
    layer = model.backbone

    def peer():
        with pytorch_grad_cam.GradCAM(model=model, target_layers=[layer]) as gradcam:
            return [
                gradcam(input_tensor=v, targets=[ClassifierOutputTarget(c)] * len(v))
                for v in inputs
                for c in classes
            ]

    (ours, theirs), _ = interleaved([lambda: predictor.maps([image], [classes]), peer], repeats)
    return {"wsss": ours, "peer": theirs, "classes": len(classes)}


if __name__ == "__main__":
    main()
