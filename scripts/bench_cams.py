"""Speed of the CAM family on torchvision ResNet-50 (or a ViT), against pytorch-grad-cam, in one
run.

The work WSSS does: maps for every labelled class of every image. Here: a batch of 8 random
224x224 images, 2 target classes each, target layer ``layer4``, random (seeded) weights.

For each method it prints the time per image, the ratio to one plain forward pass of the same
batch (``model(images)`` under inference mode), and, when ``grad-cam`` is installed
(``pip install grad-cam``), the same work done by pytorch-grad-cam (one call per class rank, as
its API takes one target per image), the speed-up, and the largest difference between the two
libraries' maps after both are post-processed by pytorch-grad-cam's own code (min-max
normalise, resize, normalise again). Score-CAM is timed on the first ``--score-images`` images
only (one forward per channel: 2,048 per image for ResNet-50).

    python scripts/bench_cams.py                      # about 8 minutes on 2 CPU cores
    python scripts/bench_cams.py --score-images 0     # gradient methods only, about 1 minute
    python scripts/bench_cams.py --arch vit_small_patch16_224 --score-images 0
        # a ViT-S/16 (timm, random weights) at its last block; pytorch-grad-cam gets the
        # reshape_transform its tutorial writes for ViTs, wsss finds the token grid itself
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from _results import save_result  # scripts/, beside this file
from _timing import interleaved

from wsss.cams import compute_cams

GRADIENT_METHODS = ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam")
REFERENCE_CLASSES = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "scorecam": "ScoreCAM",
}


def build(arch: str) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """(model, target layer, pytorch-grad-cam reshape_transform or None): a torchvision ResNet
    at ``layer4``, or a timm ViT at its last block (before the final norm) with the
    reshape_transform pytorch-grad-cam's tutorial writes for it."""
    if arch.startswith(("vit_", "deit_")):
        import timm

        model = timm.create_model(arch).eval()
        prefix = model.num_prefix_tokens

        def reshape_transform(tensor):
            side = int((tensor.shape[1] - prefix) ** 0.5)
            grid = tensor[:, prefix:].reshape(tensor.shape[0], side, side, tensor.shape[2])
            return grid.permute(0, 3, 1, 2)

        return model, model.blocks[-1], reshape_transform
    model = torchvision.models.get_model(arch).eval()
    return model, model.layer4, None


def reference_maps(model, layer, reshape, images, targets, method: str, batch_size: int):
    """pytorch-grad-cam: one call per target rank (its API takes one class per image)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class = getattr(pytorch_grad_cam, REFERENCE_CLASSES[method])
    outputs = []
    with cam_class(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        if method == "scorecam":
            cam.batch_size = batch_size
        for rank in range(len(targets[0])):
            chosen = [ClassifierOutputTarget(t[rank]) for t in targets]
            outputs.append(cam(input_tensor=images, targets=chosen))
    return np.stack(outputs, axis=1)  # (B, ranks, H, W)


def scaled_like_reference(maps: list[torch.Tensor], size: tuple[int, int]) -> np.ndarray:
    """Post-process raw maps exactly as pytorch-grad-cam does its own: min-max normalise and
    resize (``scale_cam_image`` with a size), then min-max normalise again (its layer
    aggregation), since the resized map no longer spans [0, 1] exactly."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    return np.stack(
        [scale_cam_image(scale_cam_image(m.float().numpy(), (size[1], size[0]))) for m in maps]
    )


class Table:
    """The printed rows and the figures written: time per image, the ratio to a plain forward,
    and pytorch-grad-cam's time and largest difference when it ran."""

    def __init__(self, reference: bool):
        self.rows: dict[str, dict] = {}
        header = f"{'method':<18}{'wsss ms/img':>12}{'x forward':>10}"
        if reference:
            header += f"{'pgc ms/img':>12}{'speed-up':>10}{'max |diff|':>12}"
        print(header)

    def add(self, name, seconds, images_used, batch_forward, ref=None, diff=None) -> None:
        line = f"{name:<18}{seconds / images_used * 1000:>12.1f}{seconds / batch_forward:>10.2f}"
        self.rows[name] = {"ms_per_image": seconds / images_used * 1000,
                           "times_forward": seconds / batch_forward}  # fmt: skip
        if ref is not None:
            line += f"{ref / images_used * 1000:>12.1f}{ref / seconds:>10.2f}{diff:>12.4f}"
            self.rows[name].update(reference_ms_per_image=ref / images_used * 1000,
                                   speedup=ref / seconds, max_difference=diff)  # fmt: skip
        print(line, flush=True)


def plain_forward(model, batch):
    with torch.inference_mode():
        return model(batch)


def time_gradient_methods(table, model, layer, reshape, images, targets, args, reference):
    """Each gradient method timed in turn with a plain forward (and pytorch-grad-cam)."""
    for method in GRADIENT_METHODS:
        fns = [
            lambda: plain_forward(model, images),
            lambda m=method: compute_cams(model, images, targets, m, layer),
        ]
        if reference:
            fns.append(
                lambda m=method: reference_maps(
                    model, layer, reshape, images, targets, m, args.score_batch
                )
            )
        times, results = interleaved(fns, args.repeats)
        if reference:
            diff = float(
                np.abs(scaled_like_reference(results[1], images.shape[2:]) - results[2]).max()
            )
            table.add(method, times[1], args.batch, times[0], times[2], diff)
        else:
            table.add(method, times[1], args.batch, times[0])


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def time_score_cam(table, model, layer, reshape, images, targets, args, reference):
    """Score-CAM on the first ``--score-images`` images, timed once each (minutes per image);
    the ratio column compares with a plain forward of the same images, timed just before."""
    n = min(args.score_images, args.batch)
    images, targets = images[:n], targets[:n]
    (forward,), _ = interleaved([lambda: plain_forward(model, images)], args.repeats)
    score = functools.partial(compute_cams, model, images, targets, "scorecam", layer,
                              score_batch_size=args.score_batch)  # fmt: skip
    maps, seconds = _timed(score)
    if reference:
        ref, ref_seconds = _timed(
            lambda: reference_maps(
                model, layer, reshape, images, targets, "scorecam", args.score_batch
            )  # fmt: skip
        )
        diff = float(np.abs(scaled_like_reference(maps, images.shape[2:]) - ref).max())
        table.add("scorecam", seconds, n, forward, ref_seconds, diff)
    else:
        table.add("scorecam", seconds, n, forward)
    fast, fast_seconds = _timed(lambda: score(top_channels=args.top_channels))
    table.add(f"scorecam top{args.top_channels}", fast_seconds, n, forward)
    gap = np.abs(
        scaled_like_reference(fast, images.shape[2:])
        - scaled_like_reference(maps, images.shape[2:])
    ).max()
    print(
        f"  (top-{args.top_channels} maps vs full Score-CAM: max |diff| {gap:.4f}; "
        f"Score-CAM timed once on {n} image(s))"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=2, help="target classes per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--score-images", type=int, default=1, help="0 skips Score-CAM")
    parser.add_argument("--score-batch", type=int, default=16)
    parser.add_argument("--top-channels", type=int, default=256)
    parser.add_argument("--no-reference", action="store_true", help="skip pytorch-grad-cam")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    parser.add_argument(
        "--arch", default="resnet50", help="a torchvision ResNet, or a timm ViT/DeiT by name"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    model, layer, reshape = build(args.arch)
    images = torch.rand(args.batch, 3, args.size, args.size)
    rng = np.random.default_rng(0)
    targets = [rng.choice(1000, args.classes, replace=False).tolist() for _ in range(args.batch)]
    reference = not args.no_reference
    if reference:
        try:
            import pytorch_grad_cam  # noqa: F401
        except ImportError:
            print("pytorch-grad-cam not installed (pip install grad-cam): wsss timings only")
            reference = False
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.arch}, batch "
        f"{args.batch}, {args.size}x{args.size}, {args.classes} classes per image\n"
    )
    forward, _ = interleaved([lambda: plain_forward(model, images)], args.repeats)
    print(
        f"plain forward of the batch: {forward[0]:.3f} s ({forward[0] / args.batch * 1e3:.1f} "
        "ms/img); each row below re-times it alongside the method\n"
    )
    table = Table(reference)
    work = (table, model, layer, reshape, images, targets, args, reference)
    time_gradient_methods(*work)
    if args.score_images > 0:
        time_score_cam(*work)
    figures = {"arch": args.arch, "batch": args.batch, "size": args.size, "rows": table.rows}
    print(f"figures: {save_result(f'bench_cams_{args.arch}', figures, args.json)}")


if __name__ == "__main__":
    main()
