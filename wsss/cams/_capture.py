"""Capturing a layer's activation during a forward pass, cheaply and without leaking hooks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """``layer`` as a module of ``model``: a module, or its dotted name (``"backbone.layer4"``)."""
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n][-8:]
            raise ValueError(
                f"model has no layer named {layer!r} (its last layers are {names})"
            ) from None
    if not isinstance(layer, nn.Module):
        raise TypeError(f"target_layer must be an nn.Module or a name, got {type(layer).__name__}")
    if not any(m is layer for m in model.modules()):
        raise ValueError("target_layer is not a submodule of the model")
    return layer


@contextmanager
def preserved_modes(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode, and restore each module's own mode afterwards.

    Restoring per module (not ``model.train(flag)``) keeps mixed states intact, such as frozen
    batch-norm layers held in eval mode inside a model that is training.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class LayerCapture:
    """Context manager: records the output of ``layer`` on each forward pass of the model.

    With ``differentiable=True`` the captured output becomes a fresh leaf of the autograd graph
    and gradient recording is switched on from that layer onward, so a forward pass run under
    ``torch.no_grad()`` records only the layers after the target: gradients with respect to the
    activation then cost a backward pass through the head alone, not the whole network.
    """

    def __init__(self, layer: nn.Module, differentiable: bool = False):
        self.layer = layer
        self.differentiable = differentiable
        self.activation: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module: nn.Module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.ndim not in (3, 4):
            shape = getattr(output, "shape", type(output).__name__)
            raise ValueError(
                "target layer must output a (B, C, h, w) map, (B, h, w, C) or (B, N, C) tokens, "
                f"got {shape}"
            )
        if not self.differentiable:
            self.activation = output.detach()
            return None
        torch.set_grad_enabled(True)  # the enclosing no_grad() restores the mode on exit
        self.activation = output.detach().requires_grad_(True)
        # A clone, so that in-place operations after the layer (ReLU(inplace=True)) do not
        # modify the leaf we differentiate against.
        return self.activation.clone()

    def __enter__(self) -> LayerCapture:
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def take(self) -> torch.Tensor:
        """The activation of the last forward pass; an error if the layer never ran."""
        if self.activation is None:
            raise ValueError("target layer was not used in the model's forward pass")
        activation, self.activation = self.activation, None
        return activation
