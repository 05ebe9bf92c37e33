"""IRN's inter-pixel relations (Ahn et al., CVPR 2019), on any backbone, on a CPU.

* :class:`BoundaryNet`: boundary heads (1x1 conv + GroupNorm + ReLU on each of the frozen
  backbone's levels, fused by a 1x1 conv) predicting a class-boundary map B at stride 4;
* :func:`path_affinities`: the affinity of pixel pairs within a radius, ``1 - max B`` on the line
  between them (IRN's definition);
* :func:`random_walk`: the maps propagated through the transition matrix
  ``T = A^beta / column sums`` for ``2^exp_times`` steps, as sparse neighbourhood products (never
  an n x n matrix), so memory grows with the image, not with its square;
* :class:`IrnSettings`: the ``refine=irn`` map refiner built on them.

The network is trained by ``python -m wsss.train_affinity`` (:mod:`wsss.engine.affinity`) on the
CRF seeds of a ``generate_masks`` run; its checkpoint holds the backbone it was trained with.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from wsss.cams.tokens import feature_map
from wsss.errors import CheckpointError, ConfigError
from wsss.io import atomic_path
from wsss.masks.refine import REFINERS, RefineSettings
from wsss.models import CAMClassifier, ModelSpec, create_classifier

CHECKPOINT_FORMAT = "wsss-affinity"
CHECKPOINT_VERSION = 1
STRIDE = 4  # the boundary map's stride, as IRN's


class BoundaryNet(nn.Module):
    """Boundary map B (B, 1, ceil(H / 4), ceil(W / 4)) in [0, 1] of RGB images in [0, 1], from
    the frozen features of ``classifier``'s backbone at every level it lists."""

    def __init__(self, classifier: CAMClassifier, width: int = 32):
        super().__init__()
        self.classifier = classifier
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            channels = [f.shape[1] for f in self.levels(torch.zeros(1, 3, 64, 64))]
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, width, 1, bias=False), nn.GroupNorm(4, width), nn.ReLU(inplace=True)
            )
            for c in channels
        )
        self.fuse = nn.Conv2d(width * len(channels), 1, 1)
        self.width = width

    def levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's features at each of its levels, as (B, C, h, w) maps."""
        backbone = self.classifier.backbone
        modules = backbone.feature_levels()
        found: dict[int, torch.Tensor] = {}
        hooks = [
            m.register_forward_hook(lambda _m, _i, out, k=k: found.__setitem__(k, out))
            for k, m in enumerate(modules)
        ]
        try:
            self.classifier.eval()  # frozen: batch-norm statistics stay the pretrained ones
            with torch.no_grad():
                self.classifier.forward_features(images)
        finally:
            for hook in hooks:
                hook.remove()
        size = tuple(images.shape[2:])
        return [feature_map(found[k], backbone, size, layer=modules[k]) for k in sorted(found)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = (-(-s // STRIDE) for s in images.shape[2:])
        features = [
            F.interpolate(head(f), (height, width), mode="bilinear", align_corners=False)
            for head, f in zip(self.heads, self.levels(images), strict=True)
        ]
        return torch.sigmoid(self.fuse(torch.cat(features, dim=1)))

    def train(self, mode: bool = True) -> BoundaryNet:
        super().train(mode)
        self.classifier.eval()  # the backbone is never in training mode
        return self


def half_disk(radius: int) -> list[tuple[int, int]]:
    """Offsets (dy, dx) with dy^2 + dx^2 < radius^2 in one half-plane: each pixel pair once."""
    return [
        (dy, dx)
        for dy in range(0, radius)
        for dx in range(-radius + 1, radius)
        if dy * dy + dx * dx < radius * radius and (dy > 0 or dx > 0)
    ]


def line(dy: int, dx: int) -> list[tuple[int, int]]:
    """The grid points on the segment from (0, 0) to (dy, dx), both ends included."""
    steps = max(abs(dy), abs(dx))
    return sorted({(round(k * dy / steps), round(k * dx / steps)) for k in range(steps + 1)})


def path_affinities(boundary: torch.Tensor, radius: int) -> tuple[torch.Tensor, list]:
    """Affinities of every pixel to each :func:`half_disk` offset: ``1 - max B`` along the line
    between the two pixels; 0 where the partner lies outside the image.

    ``boundary``: (B, 1, h, w). Returns ((B, K, h, w) affinities, the K offsets).
    """
    offsets = half_disk(radius)
    batch, _, height, width = boundary.shape
    pad = radius
    # Outside the image is all boundary: pairs reaching out get affinity 0.
    padded = F.pad(boundary, (pad, pad, pad, pad), value=1.0)

    def shifted(dy: int, dx: int) -> torch.Tensor:
        return padded[:, 0, pad + dy : pad + dy + height, pad + dx : pad + dx + width]

    affinities = []
    for dy, dx in offsets:
        strongest = torch.stack([shifted(py, px) for py, px in line(dy, dx)]).amax(dim=0)
        affinities.append(1 - strongest)
    return torch.stack(affinities, dim=1), offsets


def transition_matrix(
    affinity: torch.Tensor, offsets: list[tuple[int, int]], beta: float
) -> torch.Tensor:
    """IRN's transition matrix of one image as a sparse CSR (n, n) tensor, n = h * w:
    ``T[i, j] = A[i, j]^beta / sum_k A[k, j]`` over pairs within the radius (A symmetric, 1 on
    the diagonal), so that ``x @ T`` is one step of the walk. Returned transposed (``T^T``),
    for ``T^T @ x`` products."""
    _, height, width = affinity.shape
    n = height * width
    index = torch.arange(n).view(height, width)
    rows, cols, values = [torch.arange(n)], [torch.arange(n)], [torch.ones(n)]
    for k, (dy, dx) in enumerate(offsets):
        ys = slice(0, height - dy)
        xs = slice(max(0, -dx), width - max(0, dx))
        source = index[ys, xs].reshape(-1)
        target = index[dy : dy + height - dy, max(0, dx) : max(0, dx) + xs.stop - xs.start]
        value = affinity[k, ys, xs].reshape(-1).clamp_min(0) ** beta
        target = target.reshape(-1)
        rows += [source, target]
        cols += [target, source]
        values += [value, value]
    rows, cols, values = torch.cat(rows), torch.cat(cols), torch.cat(values)
    column_sums = torch.zeros(n).index_add_(0, cols, values)
    values = values / column_sums[cols]
    # x @ T == (T^T @ x^T)^T: store T^T, i.e. swap rows and columns.
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        indices = torch.stack([cols, rows])
        matrix = torch.sparse_coo_tensor(indices, values, (n, n), check_invariants=False)
        return matrix.coalesce().to_sparse_csr()


def random_walk(
    maps: torch.Tensor, affinity: torch.Tensor, offsets, beta: float, exp_times: int
) -> torch.Tensor:
    """``maps`` (C, h, w) walked ``2^exp_times`` steps through :func:`transition_matrix`."""
    channels, height, width = maps.shape
    transposed = transition_matrix(affinity, offsets, beta)
    x = maps.reshape(channels, -1).T.contiguous()  # (n, C)
    for _ in range(2**exp_times):
        x = transposed @ x
    return x.T.reshape(channels, height, width)


def save_affinity(path: str | os.PathLike, net: BoundaryNet, spec: ModelSpec, classes, metrics):
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": asdict(spec),
        "class_names": list(classes),
        "width": net.width,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "metrics": dict(metrics),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


@functools.lru_cache(maxsize=2)
def load_affinity(path: str) -> BoundaryNet:
    """A trained :class:`BoundaryNet` (loaded with ``weights_only=True``), in eval mode."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"{file}: affinity checkpoint not found (train one with "
                              "python -m wsss.train_affinity)")  # fmt: skip
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{file}: corrupt or unsafe checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{file}: not a wsss affinity checkpoint")
    spec = ModelSpec(**payload["model"])
    classifier = create_classifier(
        ModelSpec(spec.backbone, None, spec.backbone_kwargs), len(payload["class_names"])
    )
    net = BoundaryNet(classifier, payload["width"])
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{file}: weights do not fit ({exc})") from exc
    return net.eval()


@REFINERS.register("irn")
@dataclass
class IrnSettings(RefineSettings):
    """IRN's random walk (``refine=irn``): the boundary map of the image (and of its mirror
    image) gives affinities within ``radius`` (at stride 4); the maps, times (1 - B), walk
    ``2^exp_times`` steps through ``T = A^beta`` (column-normalised), are brought back to the
    working size and divided by their joint maximum; background is ``bg_threshold`` (IRN 0.25).
    ``checkpoint``: an affinity checkpoint from ``python -m wsss.train_affinity``."""

    name: str = "irn"
    checkpoint: str = MISSING
    bg_threshold: float | None = 0.25
    radius: int = 5
    beta: float = 10.0
    exp_times: int = 8
    flip: bool = True

    def validate(self) -> None:
        super().validate()
        if self.radius < 2 or self.beta <= 0 or not 0 <= self.exp_times <= 12:
            raise ConfigError("refine.radius >= 2, refine.beta > 0, 0 <= refine.exp_times <= 12")

    def boundary(self, image: np.ndarray) -> torch.Tensor:
        """(h, w) boundary map at stride 4 of a uint8 image (mirror image averaged in)."""
        net = load_affinity(self.checkpoint)
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255
        with torch.inference_mode():
            views = torch.cat([x, x.flip(-1)]) if self.flip else x
            found = net(views)
        return (found[0, 0] + found[1, 0].flip(-1)) / 2 if self.flip else found[0, 0]

    def refine(self, image, cams, classes):
        if len(cams) == 0:
            return cams
        height, width = cams.shape[1:]
        edge = self.boundary(image)
        small = F.interpolate(
            torch.from_numpy(cams)[None].float(), edge.shape, mode="bilinear", antialias=True
        )[0]
        affinity, offsets = path_affinities(edge[None, None], self.radius)
        walked = random_walk(small * (1 - edge), affinity[0], offsets, self.beta, self.exp_times)
        up = F.interpolate(walked[None], (height, width), mode="bilinear", align_corners=False)[0]
        return (up / up.max().clamp_min(1e-8)).clamp_min(0).numpy().astype(np.float32)
