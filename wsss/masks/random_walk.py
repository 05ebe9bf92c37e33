"""IRN's random walk (Ahn et al., CVPR 2019): maps spread along the affinities that a boundary
map (:class:`~wsss.models.boundary.BoundaryNet`) gives pixel pairs, on a CPU.

* :func:`path_affinities`: the affinity of pixel pairs within a radius, ``1 - max B`` on the line
  between them (IRN's definition);
* :func:`random_walk`: the maps propagated through the transition matrix
  ``T = A^beta / column sums`` for ``2^exp_times`` steps, as banded products (one shifted
  multiply-add per offset within the radius; never an n x n matrix), so time and memory grow
  with the image, not with its square;
* :class:`IrnSettings`: the ``refine=irn`` map refiner built on them.

The network is trained by ``python -m wsss.train_affinity`` (:mod:`wsss.engine.boundary_training`)
on the CRF seeds of a ``generate_masks`` run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wsss.errors import ConfigError
from wsss.masks.refine import REFINERS, RefineSettings
from wsss.models.boundary import load_boundary_net
from wsss.models.inference import compile_module, resolve_backend


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


def transition_weights(
    affinity: torch.Tensor, offsets: list[tuple[int, int]], beta: float
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """IRN's transition matrix ``T[i, j] = A[i, j]^beta / sum_k A[k, j]`` (A symmetric, 1 on
    the diagonal, 0 beyond the radius) as a band: weights P (K', h, w) and their K' offsets (the
    pixel itself, each :func:`half_disk` offset and its mirror), such that one step of the walk,
    ``x @ T``, is ``x'[q] = sum_o P_o[q] x[q + o]``.

    ``affinity``: (K, h, w), pair (q, q + offsets[k]) at q, 0 where the partner lies outside.
    """
    _, height, width = affinity.shape
    radius = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    forward = affinity.clamp_min(0) ** beta  # the pair (q, q + o), stored at q
    padded = F.pad(forward, (radius, radius, radius, radius))
    r = radius
    backward = torch.stack(  # the pair (q - o, q), stored at q
        [padded[k, r - dy : r - dy + height, r - dx : r - dx + width]
         for k, (dy, dx) in enumerate(offsets)]
    )  # fmt: skip
    weights = torch.cat([torch.ones(1, height, width), forward, backward])
    mirrored = [(-dy, -dx) for dy, dx in offsets]
    return weights / weights.sum(dim=0, keepdim=True), [(0, 0), *offsets, *mirrored]


def random_walk(
    maps: torch.Tensor, affinity: torch.Tensor, offsets, beta: float, exp_times: int
) -> torch.Tensor:
    """``maps`` (C, h, w) walked ``2^exp_times`` steps through IRN's transition matrix
    (:func:`transition_weights`): each step is one multiply-add per offset of a shifted copy of
    the maps, so time and memory grow with the image, and no n x n matrix is ever formed."""
    channels, height, width = maps.shape
    weights, all_offsets = transition_weights(affinity, offsets, beta)
    r = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    padded = torch.zeros(channels, height + 2 * r, width + 2 * r, dtype=maps.dtype)
    inside = padded[:, r : r + height, r : r + width]
    inside.copy_(maps)
    views = [padded[:, r + dy : r + dy + height, r + dx : r + dx + width] for dy, dx in all_offsets]
    step = torch.empty(channels, height, width, dtype=maps.dtype)
    for _ in range(2**exp_times):
        torch.mul(views[0], weights[0], out=step)
        for weight, view in zip(weights[1:], views[1:], strict=True):
            step.addcmul_(view, weight)
        inside.copy_(step)
    return inside.clone()


@REFINERS.register("irn")
@dataclass
class IrnSettings(RefineSettings):
    """IRN's random walk (``refine=irn``): the boundary map of the image (and of its mirror
    image) gives affinities within ``radius`` (at stride 4); the maps, times (1 - B), walk
    ``2^exp_times`` steps through ``T = A^beta`` (column-normalised), are brought back to the
    working size and divided by their joint maximum; background is ``bg_threshold``: 0.40, the
    best on PASCAL VOC's tune photos for every boundary network tried (IRN's own is 0.25; see
    ``results/irn_ablation.json`` and the README).
    ``checkpoint``: an affinity checkpoint from ``python -m wsss.train_affinity``; null: the
    ``generate_masks`` command trains one on the way (:mod:`wsss.engine.irn_stages`)."""

    name: str = "irn"
    checkpoint: str | None = None
    bg_threshold: float | None = 0.40
    radius: int = 5
    beta: float = 10.0
    exp_times: int = 8
    flip: bool = True
    #: what computes the boundary map on a CPU: auto (OpenVINO when installed), torch, openvino,
    #: onnxruntime (:mod:`wsss.models.inference`)
    backend: str = "auto"

    def validate(self) -> None:
        super().validate()
        if self.radius < 2 or self.beta <= 0 or not 0 <= self.exp_times <= 12:
            raise ConfigError("refine.radius >= 2, refine.beta > 0, 0 <= refine.exp_times <= 12")
        if self.backend not in ("auto", "torch", "openvino", "onnxruntime"):
            raise ConfigError(f"refine.backend must be auto, torch, openvino or onnxruntime, "
                              f"got {self.backend!r}")  # fmt: skip

    def boundary(self, image: np.ndarray) -> torch.Tensor:
        """(h, w) boundary map at stride 4 of a uint8 image (mirror image averaged in)."""
        if not self.checkpoint:
            raise ConfigError(
                "refine=irn needs refine.checkpoint=<affinity.pt> (python -m wsss.train_affinity); "
                "python -m wsss.generate_masks trains one on the way when it is null"
            )
        net = _boundary_engine(self.checkpoint, self.backend)
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


@functools.lru_cache(maxsize=2)
def _boundary_engine(checkpoint: str, backend: str):
    """The boundary network of ``checkpoint`` as a function of a (B, 3, H, W) batch, run by
    ``backend`` (OpenVINO by default on a CPU: 3-4x PyTorch eager), converted once per process."""
    net = load_boundary_net(checkpoint)
    backend = resolve_backend(backend, net, torch.device("cpu"))
    if backend == "torch":
        net = net.to(memory_format=torch.channels_last)
        return lambda x: net(x.contiguous(memory_format=torch.channels_last))
    run = compile_module(net, backend)
    return lambda x: torch.from_numpy(run(np.ascontiguousarray(x.numpy())))
