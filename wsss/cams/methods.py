"""How each method of the CAM family turns activations (and gradients or scores) into maps.

Notation: ``A`` is one image's activation at the target layer, (C, h, w); ``G`` holds the
gradients of the n target class scores (before any softmax) with respect to ``A``, (n, C, h, w).
Each function returns the n maps *before* the final ReLU, at the layer's resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def gradcam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): alpha_k = spatial mean of dy/dA^k; map = sum_k alpha_k A^k."""
    return torch.einsum("nc,chw->nhw", G.mean(dim=(2, 3)), A)


def gradcampp(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al.), closed form for an exponential output.

    a_ij = g^2 / (2 g^2 + sum_ab A_ab g^3) (0 where the denominator is 0);
    w_k = sum_ij a_ij relu(g_ij); map = sum_k w_k A^k.
    """
    g2 = G * G
    denominator = 2 * g2 + A.sum(dim=(1, 2))[None, :, None, None] * g2 * G
    safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    alpha = torch.where(denominator != 0, g2 / safe, torch.zeros_like(g2))
    weights = (alpha * torch.relu(G)).sum(dim=(2, 3))
    return torch.einsum("nc,chw->nhw", weights, A)


def xgradcam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al.): w_k = sum_ij (A_ij / sum_ab A_ab) g_ij (0 for an all-zero map)."""
    total = A.sum(dim=(1, 2))
    safe = torch.where(total != 0, total, torch.ones_like(total))
    weights = (G * A[None]).sum(dim=(2, 3)) / safe[None]
    weights = torch.where(total[None] != 0, weights, torch.zeros_like(weights))
    return torch.einsum("nc,chw->nhw", weights, A)


def layercam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al.): map = sum_k relu(g^k) * A^k, position by position."""
    return (torch.relu(G) * A[None]).sum(dim=1)


def hirescam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin): map = sum_k g^k * A^k, position by position."""
    return (G * A[None]).sum(dim=1)


GradientCombiner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

GRADIENT_METHODS: dict[str, GradientCombiner] = {
    "gradcam": gradcam,
    "gradcampp": gradcampp,
    "xgradcam": xgradcam,
    "layercam": layercam,
    "hirescam": hirescam,
}
