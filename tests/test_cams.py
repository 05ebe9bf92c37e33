"""The CAM family against naive computations written independently, and the API's contract."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsss.cams import METHODS, cam_method, compute_cams, multiscale_cams
from wsss.models import ModelSpec, create_classifier


class TinyNet(nn.Module):
    """conv -> ReLU -> conv (the target layer) -> ReLU -> GAP -> linear with bias."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.ReLU())
        self.target = nn.Conv2d(6, 8, 3, 1, 1)
        self.fc = nn.Linear(8, num_classes)

    def head(self, activation):
        return self.fc(F.relu(activation).mean(dim=(2, 3)))

    def forward(self, x):
        return self.head(self.target(self.stem(x)))


@pytest.fixture
def net():
    torch.manual_seed(0)
    model = TinyNet().double()
    # Make a few channels constant (all zero after the conv), as dead ReLU channels are.
    with torch.no_grad():
        model.target.weight[6:] = 0
        model.target.bias[6:] = 0
    return model


IMAGES = torch.rand(3, 3, 12, 10, generator=torch.Generator().manual_seed(1)).double()
TARGETS = [[0, 3], [2], [4, 1, 0]]


def naive_activation_and_gradient(net, image, cls):
    activation = net.target(net.stem(image[None])).detach().requires_grad_(True)
    net.head(activation)[0, cls].backward()
    return activation.detach()[0], activation.grad[0]


def naive_gradient_map(method, A, g):
    C = A.shape[0]
    total = torch.zeros(A.shape[1:], dtype=A.dtype)
    if method in ("layercam", "hirescam"):
        for k in range(C):
            total += (torch.relu(g[k]) if method == "layercam" else g[k]) * A[k]
        return torch.relu(total)
    for k in range(C):
        if method == "gradcam":
            w = g[k].mean()
        elif method == "xgradcam":
            w = (A[k] / A[k].sum() * g[k]).sum() if A[k].sum() != 0 else 0.0
        else:  # gradcampp, position by position
            w = 0.0
            for i in range(A.shape[1]):
                for j in range(A.shape[2]):
                    gij = g[k, i, j]
                    den = 2 * gij**2 + A[k].sum() * gij**3
                    a = gij**2 / den if den != 0 else 0.0
                    w = w + a * torch.relu(gij)
        total += w * A[k]
    return torch.relu(total)


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "xgradcam", "layercam", "hirescam"])
def test_gradient_methods_match_naive_autograd(net, method):
    maps = compute_cams(net, IMAGES, TARGETS, method=method, target_layer=net.target)
    for i, classes in enumerate(TARGETS):
        assert maps[i].shape == (len(classes), 6, 5)
        for row, cls in enumerate(classes):
            A, g = naive_activation_and_gradient(net, IMAGES[i], cls)
            expected = naive_gradient_map(method, A, g)
            assert torch.allclose(maps[i][row], expected, atol=1e-5), (method, i, cls)


def test_score_cam_matches_a_per_channel_loop(net):
    maps = compute_cams(
        net, IMAGES, TARGETS, method="scorecam", target_layer=net.target, score_batch_size=3
    )
    with torch.no_grad():
        baseline = net(torch.zeros_like(IMAGES[:1]))[0]
        for i, classes in enumerate(TARGETS):
            A = net.target(net.stem(IMAGES[i][None]))[0]
            for row, cls in enumerate(classes):
                scores = []
                for k in range(A.shape[0]):
                    up = F.interpolate(
                        A[k][None, None], size=(12, 10), mode="bilinear", align_corners=False
                    )[0, 0]
                    if up.max() == up.min():
                        mask = torch.ones_like(up)  # a constant map masks nothing
                    else:
                        mask = (up - up.min()) / (up.max() - up.min())
                    scores.append(net(IMAGES[i][None] * mask)[0, cls] - baseline[cls])
                weights = torch.softmax(torch.stack(scores), dim=0)
                expected = torch.relu(sum(weights[k] * A[k] for k in range(A.shape[0])))
                assert torch.allclose(maps[i][row], expected, atol=1e-5), (i, cls)


def test_score_cam_top_channels_uses_only_the_most_active(net):
    full = compute_cams(net, IMAGES[:1], [[0]], method="scorecam", target_layer=net.target)
    top = compute_cams(
        net, IMAGES[:1], [[0]], method="scorecam", target_layer=net.target, top_channels=8
    )
    assert torch.allclose(full[0], top[0])  # all 8 channels kept: identical
    fewer = compute_cams(
        net, IMAGES[:1], [[0]], method="scorecam", target_layer=net.target, top_channels=2
    )
    assert fewer[0].shape == full[0].shape and not torch.allclose(fewer[0], full[0])


def test_gradcam_is_proportional_to_cam_for_a_gap_linear_head():
    torch.manual_seed(0)
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 5)
    images = torch.rand(2, 3, 32, 40)
    targets = [[1, 4], [0]]
    cam = compute_cams(model, images, targets, method="cam")
    grad = compute_cams(model, images, targets, method="gradcam")
    h, w = cam[0].shape[1:]
    for c, g in zip(cam, grad, strict=True):
        # alpha_k = w_k^c / (h w), so Grad-CAM = CAM / (h w) exactly.
        assert torch.allclose(g * h * w, c, atol=1e-5)


def test_state_is_restored_and_no_hooks_remain(net):
    net.train()
    net.stem[0].eval()  # a mixed state, e.g. a frozen layer inside a training model
    for method in METHODS:
        if method in ("cam", "lpcam", "recam"):  # a CAM classifier's (test_lpcam, test_recam)
            continue
        with torch.no_grad():
            compute_cams(net, IMAGES[:1], [[0]], method=method, target_layer="target")
        assert torch.is_grad_enabled()
        compute_cams(net, IMAGES[:1], [[0]], method=method, target_layer=net.target)
        assert net.training and net.target.training and not net.stem[0].training
        assert not any(m._forward_hooks for m in net.modules())
        assert all(p.grad is None for p in net.parameters())
        maps = compute_cams(net, IMAGES[:1], [[0]], method=method, target_layer=net.target)
        assert not maps[0].requires_grad  # plain results, no autograd history kept alive


def test_errors_are_clear(net):
    with pytest.raises(ValueError, match="no layer named 'tagret'"):
        compute_cams(net, IMAGES, TARGETS, target_layer="tagret")
    with pytest.raises(ValueError, match=r"class indices \[7\] out of range \[0, 5\)"):
        compute_cams(net, IMAGES, [[0], [7], [1]], target_layer=net.target)
    with pytest.raises(ValueError, match="unknown CAM method"):
        compute_cams(net, IMAGES, TARGETS, method="gradcam+++", target_layer=net.target)
    with pytest.raises(ValueError, match="not a submodule"):
        compute_cams(net, IMAGES, TARGETS, target_layer=nn.Conv2d(6, 8, 3))
    with pytest.raises(ValueError, match="needs a classifier with a GAP"):
        compute_cams(net, IMAGES, TARGETS, method="cam")

    class NoScores(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return {"out": self.body(x)}

    with pytest.raises(ValueError, match="must return class scores"):
        compute_cams(NoScores(), IMAGES.float(), [[0]] * 3, target_layer="body")


def test_torchvision_model_and_tta_work():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    images = torch.rand(2, 3, 64, 64)
    maps = compute_cams(model, images, [[3], [1, 2]], method="gradcampp", target_layer="layer4")
    assert [m.shape for m in maps] == [(1, 2, 2), (2, 2, 2)]
    summed = multiscale_cams(
        cam_method(model, "layercam", target_layer=model.layer4),
        images,
        [[3], [1, 2]],
        scales=(1.0, 0.5),
    )
    assert [m.shape for m in summed] == [(1, 64, 64), (2, 64, 64)]
    assert all(torch.isfinite(m).all() and (m >= 0).all() for m in summed)


def test_tta_in_small_passes_equals_one_pass(net):
    """The batch is split at large scales to bound memory; the sums do not change."""
    method = cam_method(net, "gradcampp", target_layer=net.target)
    whole = multiscale_cams(method, IMAGES, TARGETS, (1.0, 2.0), flip=True)
    calls = []

    def counted(views, targets):
        calls.append(len(views))
        return method(views, targets)

    pieces = multiscale_cams(counted, IMAGES, TARGETS, (1.0, 2.0), True, pixels_per_pass=600)
    assert calls == [4, 2, 2, 2, 2], "2 images (4 views) per pass at scale 1, then 1 at 2.0"
    for a, b in zip(whole, pieces, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
