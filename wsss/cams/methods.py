"""The CAM family: one settings class per method (the ``cam`` config group), in
:data:`CAM_METHODS`, and the formulas that weight the channels.

Notation: ``A`` is one image's activation at the target layer, (C, h, w); ``G`` holds the
gradients of the n target class scores (before any softmax) with respect to ``A``, (n, C, h, w).
Each formula returns the n maps *before* the final ReLU, at the layer's resolution.

Adding a method is one class (or, for a gradient method, one formula decorated with
:func:`gradient_method`) plus one YAML file in ``conf/cam/``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from omegaconf import MISSING
from torch import nn

from wsss.cams._capture import preserved_modes, resolve_layer
from wsss.cams.engines import (
    GradientFormula,
    check_target_classes,
    class_activation_maps,
    gradient_cams,
    score_cams,
)
from wsss.cams.prototypes import PrototypeFitSettings, Prototypes, prototype_maps
from wsss.errors import CheckpointError, ConfigError
from wsss.models.inference import accelerated
from wsss.models.tokens import Reshape
from wsss.registry import Registry

CAM_METHODS: Registry[type[CamSettings]] = Registry("CAM method")
"""CAM methods by name. An entry is a dataclass deriving from :class:`CamSettings`; its extra
fields are the method's own options, and its :meth:`~CamSettings.maps` computes raw maps."""


@dataclass
class CamSettings:
    """Which maps, at which working resolution, with which test-time augmentation.

    ``scales`` and ``flip``: maps are summed over these input scales and their mirror images
    (:func:`~wsss.cams.multiscale_cams`). ``target_layer``: dotted name of the feature layer
    (None: the classifier's backbone). ``max_side``: the working resolution: an image whose long
    side is larger is shrunk to this many pixels (at scale 1.0) before any map is computed, and
    its maps are upsampled back to its size; smaller images keep theirs (None: every image at its
    own size).
    """

    method: str = MISSING
    scales: list[float] = field(default_factory=lambda: [1.0, 1.5])
    flip: bool = True
    target_layer: str | None = None
    max_side: int | None = 448

    #: whether the method reads a target layer (CAM reads the classifier weights instead)
    needs_layer: ClassVar[bool] = True

    def validate(self) -> None:
        registered = CAM_METHODS.get(self.method)
        if type(self) is not registered:
            raise ConfigError(
                f"cam.method={self.method!r} does not go with {type(self).__name__} settings; "
                f"choose the method with cam={self.method}"
            )
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"cam.scales must be positive, got {list(self.scales)}")
        if self.max_side is not None and self.max_side < 16:
            raise ConfigError(f"cam.max_side must be >= 16 pixels, got {self.max_side}")

    def options(self) -> dict[str, Any]:
        """The method's own options: the fields its class adds to :class:`CamSettings`."""
        base = {f.name for f in fields(CamSettings)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in base}

    def maps(
        self,
        model: nn.Module,
        images: torch.Tensor,
        targets: Sequence[Sequence[int]],
        layer: nn.Module | None,
        reshape: Reshape | None = None,
    ) -> list[torch.Tensor]:
        """Raw maps (after ReLU, at the layer's resolution), one (len(targets[i]), h, w)
        tensor per image. ``model`` is in eval mode; ``layer`` is resolved; ``reshape`` lays a
        token output out as a map (None: :func:`~wsss.models.tokens.feature_map` finds how)."""
        raise NotImplementedError

    def compute(
        self,
        model: nn.Module,
        images: torch.Tensor,
        targets: Sequence[Sequence[int]],
        target_layer: nn.Module | str | None = None,
        reshape: Reshape | None = None,
    ) -> list[torch.Tensor]:
        """:meth:`maps` with the checks and guarantees of :func:`~wsss.cams.compute_cams`
        (``target_layer`` overrides :attr:`target_layer`)."""
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        layer = None
        if self.needs_layer:
            spec = target_layer if target_layer is not None else self.target_layer
            if spec is None:
                if not isinstance(getattr(model, "backbone", None), nn.Module):
                    raise ValueError(f"method {self.method!r} needs target_layer= for this model")
                spec = model.backbone
            layer = resolve_layer(model, spec)
        with preserved_modes(model):
            return self.maps(model, images, targets, layer, reshape)

    def bind(self, model: nn.Module) -> Callable[[torch.Tensor, Sequence[Sequence[int]]], list]:
        """``f(images, targets) -> maps`` for ``model``: the form
        :func:`~wsss.cams.multiscale_cams` takes."""
        layer = resolve_layer(model, self.target_layer) if self.target_layer else None
        return lambda images, targets: self.compute(model, images, targets, layer)


@CAM_METHODS.register("cam")
@dataclass
class ClassifierCam(CamSettings):
    """CAM (Zhou et al.): the classifier weights of class c applied to the final feature map,
    ``M_c = ReLU(sum_k w_k^c f_k)``. Needs a GAP + linear head (a wsss CAMClassifier)."""

    method: str = "cam"
    #: what computes the features on a CPU: torch, openvino, onnxruntime, or auto (OpenVINO
    #: when installed: 3-4x faster than PyTorch here, the same maps to 1e-5; see
    #: :mod:`wsss.models.inference`)
    backend: str = "auto"
    needs_layer: ClassVar[bool] = False

    def validate(self) -> None:
        super().validate()
        if self.backend not in ("auto", "torch", "openvino", "onnxruntime"):
            raise ConfigError(
                f"cam.backend must be auto, torch, openvino or onnxruntime, got {self.backend!r}"
            )

    def maps(self, model, images, targets, layer, reshape=None):
        return class_activation_maps(model, images, targets)

    def bind(self, model: nn.Module) -> Callable[[torch.Tensor, Sequence[Sequence[int]]], list]:
        """As :meth:`CamSettings.bind`, the features computed by :attr:`backend`."""
        device = (
            next(model.parameters()).device
            if any(True for _ in model.parameters())
            else (torch.device("cpu"))
        )
        return super().bind(accelerated(model, self.backend, device))


@CAM_METHODS.register("lpcam")
@dataclass
class PrototypeCam(ClassifierCam):
    """LPCAM (Chen et al., CVPR 2023): each class's map is the mean cosine similarity of the
    features to its foreground prototypes minus that to its context prototypes, cluster centres
    of the training photos' features (:mod:`wsss.cams.prototypes`). Needs ``prototypes``, a file
    of :class:`~wsss.cams.prototypes.Prototypes`: ``generate_masks`` fits one on the train split
    with ``fit`` when it is unset, and caches it."""

    method: str = "lpcam"
    prototypes: str | None = None
    fit: PrototypeFitSettings = field(default_factory=PrototypeFitSettings)

    def validate(self) -> None:
        super().validate()
        self.fit.validate()

    def maps(self, model, images, targets, layer, reshape=None):
        if not self.prototypes:
            raise ConfigError(
                "cam=lpcam needs cam.prototypes=<prototypes.pt> (generate_masks fits them on "
                "the train split when it is unset)"
            )
        prototypes = _read_once(Prototypes.load, self.prototypes)
        if len(prototypes.foreground) != model.num_classes:
            raise ConfigError(
                f"{self.prototypes}: prototypes of {len(prototypes.foreground)} classes for a "
                f"classifier of {model.num_classes}"
            )
        check_target_classes(targets, images.shape[0], model.num_classes)
        with torch.inference_mode():
            features = model.forward_features(images)
            return prototype_maps(features, model.cam_weights, prototypes, targets)


@dataclass
class ReCamFitSettings:
    """How ``generate_masks`` fine-tunes the classifier for ReCAM (the run's ``train`` recipe
    otherwise): ReCAM's optimiser, SGD with momentum 0.9, weight decay 1e-4 and the poly
    schedule, the new head at 10x the backbone's rate, loss weight 1, 4 epochs. The rate is ten
    times ReCAM's 5e-4 for the head: ReCAM's 4 epochs of SBD are about 2,600 steps, 4 epochs of
    a few hundred to a thousand photos are a tenth of that (``scripts/diagnose_recam.py``). Not
    AdamW: its steps do not shrink with the gradient, so the backbone drifts and the maps flatten
    (README, CAM methods)."""

    epochs: int = 4
    #: the backbone's and the first head's learning rate (the new head's: ``head_lr_mult`` x)
    lr: float = 5e-4
    head_lr_mult: float = 10.0
    loss_weight: float = 1.0
    optimizer: str = "sgd"
    weight_decay: float = 1e-4

    def validate(self) -> None:
        if self.epochs < 1 or self.lr <= 0 or self.head_lr_mult <= 0 or self.loss_weight < 0:
            raise ConfigError(
                "cam.fit: epochs >= 1, lr > 0, head_lr_mult > 0 and loss_weight >= 0, got "
                f"{self.epochs}, {self.lr}, {self.head_lr_mult}, {self.loss_weight}"
            )
        if self.optimizer not in ("sgd", "adamw") or self.weight_decay < 0:
            raise ConfigError(
                "cam.fit.optimizer must be 'sgd' or 'adamw' and weight_decay >= 0, got "
                f"{self.optimizer!r}, {self.weight_decay}"
            )


@CAM_METHODS.register("recam")
@dataclass
class ReCam(ClassifierCam):
    """ReCAM (Chen et al., CVPR 2022): the CAM of a classifier fine-tuned with a second head
    whose softmax cross-entropy makes the present classes compete, with the two heads' weights
    multiplied (:mod:`wsss.engine.recam_stage`). ``checkpoint``: that classifier's checkpoint,
    whose model is the one the maps are computed with; ``generate_masks`` fine-tunes one with
    ``fit`` from the run's classifier when it is unset, and caches it."""

    method: str = "recam"
    checkpoint: str | None = None
    fit: ReCamFitSettings = field(default_factory=ReCamFitSettings)

    def validate(self) -> None:
        super().validate()
        self.fit.validate()

    def maps(self, model, images, targets, layer, reshape=None):
        if not self.checkpoint:
            raise ConfigError(
                "cam=recam needs cam.checkpoint=<a ReCAM classifier checkpoint> "
                "(generate_masks fine-tunes one on the train split when it is unset)"
            )
        weights = _read_once(_recam_weights, self.checkpoint)
        if weights.shape[0] != model.num_classes:
            raise ConfigError(
                f"{self.checkpoint}: ReCAM weights of {weights.shape[0]} classes for a "
                f"classifier of {model.num_classes}"
            )
        return class_activation_maps(model, images, targets, weights)


def _recam_weights(path: str) -> torch.Tensor:
    """ReCAM's (K, C) class weights in the checkpoint at ``path``."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: ReCAM checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the ReCAM checkpoint ({exc})") from exc
    weights = payload.get("extra", {}).get("recam_weights") if isinstance(payload, dict) else None
    if not isinstance(weights, torch.Tensor) or weights.ndim != 2:
        raise CheckpointError(
            f"{path}: not a ReCAM checkpoint (no ReCAM weights; generate_masks makes one with "
            "cam=recam and cam.checkpoint unset)"
        )
    return weights


@functools.lru_cache(maxsize=8)
def _read_version(reader: Callable[[str], Any], path: str, modified: float) -> Any:
    return reader(path)


def _read_once(reader: Callable[[str], Any], path: str) -> Any:
    """``reader(path)``, read once per version of the file (a map is computed per batch)."""
    try:
        modified = os.stat(path).st_mtime
    except OSError:
        modified = -1.0  # the reader names the missing file
    return _read_version(reader, path, modified)


#: the gradient methods' formulas ``f(A, G) -> maps``, by method name (each also a CAM method)
GRADIENT_FORMULAS: Registry[GradientFormula] = Registry("gradient formula")


@dataclass
class GradientCam(CamSettings):
    """The gradient methods: channel (or position) weights from the gradient of the class score
    at the target layer. The formula is chosen by ``method`` (see :data:`GRADIENT_FORMULAS`)."""

    method: str = "gradcam"

    def maps(self, model, images, targets, layer, reshape=None):
        formula = GRADIENT_FORMULAS.get(self.method)
        return gradient_cams(model, images, targets, layer, formula, reshape)


def gradient_method(name: str) -> Callable[[GradientFormula], GradientFormula]:
    """Decorator: make formula ``f(A, G)`` the gradient CAM method ``name``."""

    def decorator(formula: GradientFormula) -> GradientFormula:
        GRADIENT_FORMULAS.register(name)(formula)
        CAM_METHODS.register(name)(GradientCam)
        return formula

    return decorator


@gradient_method("gradcam")
def gradcam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): alpha_k = spatial mean of dy/dA^k; map = sum_k alpha_k A^k."""
    return torch.einsum("nc,chw->nhw", G.mean(dim=(2, 3)), A)


@gradient_method("gradcampp")
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


@gradient_method("xgradcam")
def xgradcam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al.): w_k = sum_ij (A_ij / sum_ab A_ab) g_ij (0 for an all-zero map)."""
    total = A.sum(dim=(1, 2))
    safe = torch.where(total != 0, total, torch.ones_like(total))
    weights = (G * A[None]).sum(dim=(2, 3)) / safe[None]
    weights = torch.where(total[None] != 0, weights, torch.zeros_like(weights))
    return torch.einsum("nc,chw->nhw", weights, A)


@gradient_method("layercam")
def layercam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al.): map = sum_k relu(g^k) * A^k, position by position."""
    return (torch.relu(G) * A[None]).sum(dim=1)


@gradient_method("hirescam")
def hirescam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin): map = sum_k g^k * A^k, position by position."""
    return (G * A[None]).sum(dim=1)


@CAM_METHODS.register("scorecam")
@dataclass
class ScoreCam(CamSettings):
    """Score-CAM (Wang et al.): channel weights = softmax over channels of the class logit of
    the image masked by each (upsampled, min-max normalised) activation map.

    ``score_batch_size``: masked images per forward pass; ``top_channels``: score only the N
    most active channels (a faster approximation; None: all).
    """

    method: str = "scorecam"
    score_batch_size: int = 16
    top_channels: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.score_batch_size < 1 or (self.top_channels is not None and self.top_channels < 1):
            raise ConfigError("cam.score_batch_size and cam.top_channels must be >= 1")

    def maps(self, model, images, targets, layer, reshape=None):
        options = (self.score_batch_size, self.top_channels)
        return score_cams(model, images, targets, layer, *options, reshape)
