"""CAMs of token models (ViT, DeiT with its distillation token, Swin's channels-last maps),
against naive computations written independently, on timm models with random weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_cams import naive_gradient_map
from torch import nn

from wsss.cams import compute_cams
from wsss.models import ModelSpec, Normalized, create_classifier

timm = pytest.importorskip("timm")

GRADIENT = ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam"]
#: (timm name, overrides for a small random model, target layer, input size, layout)
MODELS = {
    "vit": ("vit_tiny_patch16_224", {"depth": 2}, "blocks.1", (48, 32), "tokens"),
    "deit": ("deit_tiny_distilled_patch16_224", {"depth": 2}, "blocks.1", (48, 32), "tokens"),
    "swin": (
        "swin_tiny_patch4_window7_224",
        {"depths": (1, 1), "num_heads": (1, 2), "embed_dim": 16},
        "layers.1",
        (56, 56),
        "nhwc",
    ),
}


def _model(kind: str) -> tuple[nn.Module, str, tuple[int, int], str]:
    name, overrides, layer, size, layout = MODELS[kind]
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, dynamic_img_size=True, **overrides)
    return model.double().eval(), layer, size, layout


def _as_map(output: torch.Tensor, model: nn.Module, layout: str, size) -> torch.Tensor:
    """The layer output laid out by hand: this test's own reading of each layout."""
    if layout == "nhwc":
        return output.permute(0, 3, 1, 2)
    prefix = 2 if "dist_token" in dict(model.named_parameters()) else 1
    grid = (size[0] // 16, size[1] // 16)
    return output[:, prefix:].transpose(1, 2).reshape(output.shape[0], -1, *grid)


def _naive_activation_and_gradient(model, layer, layout, image, cls):
    """Activation and gradient of one class score at the layer, by a hook of its own."""
    seen = {}

    def hook(module, inputs, output):
        seen["raw"] = output.detach().requires_grad_(True)
        return seen["raw"]

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        model(image[None])[0, cls].backward()
    finally:
        handle.remove()
    size = image.shape[1:]
    activation = _as_map(seen["raw"].detach(), model, layout, size)[0]
    return activation, _as_map(seen["raw"].grad, model, layout, size)[0]


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("method", GRADIENT)
def test_gradient_methods_on_token_models_match_naive_autograd(kind, method):
    model, layer, size, layout = _model(kind)
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1)).double()
    targets = [[0, 3], [2]]
    maps = compute_cams(model, images, targets, method=method, target_layer=layer)
    for i, classes in enumerate(targets):
        for row, cls in enumerate(classes):
            A, g = _naive_activation_and_gradient(model, layer, layout, images[i], cls)
            expected = naive_gradient_map(method, A, g)
            assert maps[i][row].shape == expected.shape
            assert torch.allclose(maps[i][row], expected, atol=1e-5), (kind, method, cls)


@pytest.mark.parametrize("kind", list(MODELS))
def test_score_cam_on_token_models_matches_a_per_channel_loop(kind):
    model, layer, size, layout = _model(kind)
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(2)).double()
    maps = compute_cams(model, image, [[1]], "scorecam", layer, top_channels=12)
    A, _ = _naive_activation_and_gradient(model, layer, layout, image[0], 1)
    with torch.no_grad():
        baseline = model(torch.zeros_like(image))[0, 1]
        channels = A.mean(dim=(1, 2)).topk(12).indices.sort().values
        scores = []
        for k in channels:
            up = F.interpolate(A[k][None, None], size=size, mode="bilinear", align_corners=False)
            mask = (up - up.min()) / (up.max() - up.min())
            scores.append(model(image * mask)[0, 1] - baseline)
        weights = torch.softmax(torch.stack(scores), dim=0)
        expected = torch.relu(sum(w * A[k] for w, k in zip(weights, channels, strict=True)))
    assert torch.allclose(maps[0][0], expected, atol=1e-5)


class PlantedPatch(nn.Module):
    """A token model whose class c is the mean over patch tokens of feature c, and feature c is
    the mean of colour channel c in the patch: a red patch drives class 0, a blue one class 2.
    Like a timm ViT with ``dynamic_img_size``, its patch embedding states a patch size and a
    default grid (for 32 x 32 inputs) that other input sizes do not fill."""

    def __init__(self, patch: int = 8):
        super().__init__()
        self.num_prefix_tokens = 1
        self.patch_embed = nn.Conv2d(3, 3, patch, patch, bias=False)
        self.patch_embed.patch_size, self.patch_embed.grid_size = (patch, patch), (4, 4)
        with torch.no_grad():
            self.patch_embed.weight.zero_()
            for c in range(3):
                self.patch_embed.weight[c, c] = 1.0 / patch**2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 3))
        self.blocks = nn.Identity()  # the target layer: (B, 1 + h w, 3) tokens

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = self.blocks(torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], 1))
        return tokens[:, 1:].mean(1)


@pytest.mark.parametrize("method", [*GRADIENT, "scorecam"])
def test_maps_peak_where_a_planted_patch_drives_the_class(method):
    image = torch.zeros(1, 3, 32, 48)  # a 4 x 6 grid of 8-pixel patches
    image[0, 0, 16:24, 32:40] = 1.0  # a red patch at grid (2, 4)
    image[0, 2, 0:8, 0:8] = 1.0  # a blue one at (0, 0)
    model = PlantedPatch().eval()
    red, blue = compute_cams(model, image, [[0, 2]], method, "blocks")[0]
    assert red.shape == (4, 6)
    assert divmod(int(red.argmax()), 6) == (2, 4) and divmod(int(blue.argmax()), 6) == (0, 0)
    if method != "scorecam":  # the gradient of class 0 lives on the red feature alone
        assert red[2, 4] > 0 and red.sum() == pytest.approx(float(red[2, 4]), rel=1e-5)


def test_a_wsss_classifier_on_a_vit_backbone_supports_cam():
    """GAP over the patch tokens + the 1x1 classifier: Grad-CAM at the backbone equals
    CAM / (h w), as for a CNN, and any input size works."""
    torch.manual_seed(0)
    spec = ModelSpec("timm", None, {"model_name": "deit_tiny_distilled_patch16_224"})
    model = create_classifier(spec, 4).eval()
    assert model.output_stride == 16
    images = torch.rand(2, 3, 80, 112)
    cam = compute_cams(model, images, [[0, 3], [1]], "cam")
    grad = compute_cams(model, images, [[0, 3], [1]], "gradcam")
    assert cam[0].shape == (2, 5, 7)
    for c, g in zip(cam, grad, strict=True):
        assert torch.allclose(g * 35, c, atol=1e-5)


def test_an_unknown_token_layout_asks_for_reshape():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):  # 6 tokens: no grid to be found
            tokens = self.proj(x.flatten(2).transpose(1, 2)[:, :6])
            return self.head(tokens.mean(1))

    model = Tokens().eval()
    with pytest.raises(ValueError, match="cannot tell the token grid.*pass reshape="):
        compute_cams(model, torch.rand(1, 3, 4, 4), [[0]], "gradcam", "proj")

    def reshape(tokens):
        return tokens.transpose(1, 2).reshape(len(tokens), 4, 2, 3)

    maps = compute_cams(model, torch.rand(1, 3, 4, 4), [[0]], "gradcam", "proj", reshape=reshape)
    assert maps[0].shape == (1, 2, 3)


def test_an_adapted_timm_vit_explains_with_its_last_block():
    from wsss.models import timm_classifier

    model, names, layer = timm_classifier("vit_tiny_patch16_224", None)
    assert isinstance(model, Normalized) and layer == "blocks.11" and len(names) == 1000
    maps = compute_cams(model.eval(), torch.rand(1, 3, 64, 96), [[7]], "gradcam", f"model.{layer}")
    assert maps[0].shape == (1, 4, 6)


@pytest.mark.parametrize("model", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
def test_explain_cli_on_a_vit_and_a_swin(tmp_path, model):
    import json

    import numpy as np
    from commands import run
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 96, 3), np.uint8)).save(
        folder / "a.png"
    )
    out = tmp_path / "explain"
    run(
        "wsss.explain", f"timm_model={model}", "weights=null", f"images={folder}", "top_k=2",
        "image_size=224", f"hydra.run.dir={out}", cwd=tmp_path, cache=tmp_path / "cache",
    )  # fmt: skip
    saved = json.loads((out / "explain.json").read_text())
    assert saved["images"] == 1 and len(saved["per_image"][0]["top_k"]) == 2
    assert (out / "figures" / "00000.png").is_file()
