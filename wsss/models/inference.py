"""The classifier's features on a CPU at the machine's speed: OpenVINO or ONNX Runtime run the
backbone, PyTorch the rest.

CAM needs only the final feature map and the classifier weights, so the forward pass, its whole
cost, can run in an inference engine: on a 2-core AVX-512 CPU, OpenVINO computes EfficientNet's
features 3 to 4 times faster than PyTorch eager, equal to float32 within 1e-5 (relative; measured by
``scripts/bench_speed.py``). :func:`accelerated` wraps a :class:`CAMClassifier` so that
``forward_features`` (and so ``forward``) run in the engine; ``cam_weights`` and the head stay
PyTorch's. Gradient methods need autograd and keep PyTorch.

The engines take any input size (dynamic height and width); the model is converted once per
process (seconds) and kept per weights digest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from wsss.errors import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "openvino", "onnxruntime")


class _Features(nn.Module):
    """``model.forward_features`` as a module an exporter can trace."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


def _openvino(module: nn.Module, example: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    try:
        import openvino as ov
    except ImportError as exc:
        raise MissingDependencyError(
            "cam.backend=openvino needs OpenVINO: pip install openvino (or cam.backend=torch)"
        ) from exc
    converted = ov.convert_model(
        module.eval(), example_input=example, input=[ov.PartialShape([-1, 3, -1, -1])]
    )
    # float32 arithmetic: the maps stay those of PyTorch (a bf16 hint changes them by ~1e-2)
    compiled = ov.Core().compile_model(
        converted,
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
         "INFERENCE_NUM_THREADS": str(torch.get_num_threads())},
    )  # fmt: skip
    request = compiled.create_infer_request()
    return lambda x: request.infer([x])[0].copy()


def _onnxruntime(module: nn.Module, example: torch.Tensor) -> Callable[[np.ndarray], np.ndarray]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError(
            "cam.backend=onnxruntime needs ONNX Runtime: pip install onnxruntime onnx"
        ) from exc
    import io

    buffer = io.BytesIO()
    torch.onnx.export(
        module.eval(), example, buffer, input_names=["images"],
        output_names=["output"], dynamic_axes={"images": {0: "b", 2: "h", 3: "w"}},
        opset_version=17, dynamo=False,
    )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x})[0]


ENGINES = {"openvino": _openvino, "onnxruntime": _onnxruntime}


def compile_module(module: nn.Module, backend: str) -> Callable[[np.ndarray], np.ndarray]:
    """``module`` (images (B, 3, H, W) -> one tensor, any B, H, W) run by ``backend``: a
    function of float32 arrays."""
    if backend not in ENGINES:
        raise ConfigError(f"unknown inference backend {backend!r}; choose one of {BACKENDS}")
    with torch.no_grad():
        return ENGINES[backend](module, torch.rand(1, 3, 64, 64))


def resolve_backend(backend: str, module: nn.Module, device: torch.device) -> str:
    """The backend that will run: "auto" is OpenVINO when installed, on a CPU, for a module of
    at least :data:`AUTO_MIN_PARAMETERS` parameters, else PyTorch."""
    if backend not in (*BACKENDS, "auto"):
        raise ConfigError(f"backend must be auto or one of {BACKENDS}, got {backend!r}")
    if device.type != "cpu":
        return "torch"
    if backend != "auto":
        return backend
    if sum(p.numel() for p in module.parameters()) < AUTO_MIN_PARAMETERS:
        return "torch"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "torch"
    return "openvino"


class AcceleratedClassifier(nn.Module):
    """A :class:`~wsss.models.CAMClassifier` whose features an inference engine computes.

    ``forward_features(images)`` and ``forward(images)`` take and return what the wrapped
    model's do (float32 tensors on the CPU); ``cam_weights``, ``num_classes`` and the head are
    the wrapped model's. Inference only: no gradients flow through the engine."""

    def __init__(self, model: nn.Module, backend: str):
        super().__init__()
        if backend not in ENGINES:
            raise ConfigError(f"unknown inference backend {backend!r}; choose one of {BACKENDS}")
        self.model = model.eval()
        self.backend = backend
        self._run = compile_module(_Features(self.model), backend)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def cam_weights(self) -> torch.Tensor:
        return self.model.cam_weights

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().cpu().float().numpy())
        return torch.from_numpy(self._run(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.forward_features(images))


#: "auto" leaves models smaller than this to PyTorch: the demo's SmallCNN runs as fast there,
#: and converting a model costs a second or two
AUTO_MIN_PARAMETERS = 1_000_000


def accelerated(model: nn.Module, backend: str, device: torch.device) -> nn.Module:
    """``model`` with its features computed by ``backend`` where that applies (a CPU device and
    a CAM classifier; :func:`resolve_backend` says what "auto" picks), else ``model`` itself."""
    backend = resolve_backend(backend, model, device)
    if backend == "torch" or not hasattr(model, "forward_features"):
        return model
    log.info("computing the classifier's features with %s", backend)
    return AcceleratedClassifier(model, backend)
