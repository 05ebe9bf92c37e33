"""Where wsss's and pytorch-grad-cam's Score-CAM maps differ: the upsampling convention.

wsss upsamples activations as the Score-CAM authors' code does (bilinear, align_corners=False);
pytorch-grad-cam uses align_corners=True. This runs both on one random image with ResNet-50
(random weights) and prints the largest map difference for each convention, maps post-processed
by pytorch-grad-cam's own code. About 3 minutes on 2 CPU cores; needs ``pip install grad-cam``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from _results import save_result  # scripts/, beside this file
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import wsss.cams.engines as engines
from wsss.cams import compute_cams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", help="a torchvision ResNet")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.arch).eval()
    size = args.size
    image = torch.rand(1, 3, size, size)
    with ScoreCAM(model=model, target_layers=[model.layer4]) as cam:
        cam.batch_size = 16
        reference = cam(input_tensor=image, targets=[ClassifierOutputTarget(5)])
    interpolate = F.interpolate
    differences = {}
    try:
        for align in (False, True):
            engines.F.interpolate = lambda *a, align=align, **k: interpolate(
                *a, **{**k, "align_corners": align}
            )
            ours = compute_cams(model, image, [[5]], "scorecam", model.layer4)
            scaled = scale_cam_image(scale_cam_image(ours[0].numpy(), (size, size)))
            label = "wsss (authors' code)" if not align else "pytorch-grad-cam's"
            differences[f"align_corners={align}"] = float(np.abs(scaled - reference).max())
            print(
                f"align_corners={align} ({label} convention): max |diff| "
                f"{np.abs(scaled - reference).max():.2e}"
            )
    finally:
        engines.F.interpolate = interpolate
    figures = {"arch": args.arch, "size": size, "max_difference": differences}
    print(f"figures: {save_result('scorecam_convention', figures, args.json)}")


if __name__ == "__main__":
    main()
