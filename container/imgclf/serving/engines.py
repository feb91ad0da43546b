"""What runs the network in `serve`: a uint8 NCHW batch in, class probabilities (float32, on the CPU) out.

``IMGCLF_ENGINE``: ``auto`` (OpenVINO on CPUs, eager torch on GPUs), ``torch`` or ``openvino``.
Why OpenVINO on CPUs: docs/design.md, "OpenVINO runs the network on CPUs".
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..config import ConfigError
from ..preprocess import ImageSpec, normalize

OPENVINO_PRECISION = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
CPU = torch.device("cpu")
NOT_INSTALLED = "the openvino package is not installed"

log = logging.getLogger(__name__)

Engine = Callable[[torch.Tensor], torch.Tensor]


def choose(setting: str, device: torch.device) -> str:
    """The engine ``setting`` names for a worker on ``device``."""
    if setting == "openvino" and device.type != "cpu":
        raise ConfigError(f"IMGCLF_ENGINE=openvino runs on CPUs only; this worker serves on {device}")
    if setting == "torch" or device.type != "cpu":
        return "torch"
    problem = _openvino_problem()
    if problem and setting == "openvino":
        raise ConfigError(f"IMGCLF_ENGINE=openvino, but {problem}")
    if problem and problem != NOT_INSTALLED:
        log.warning("IMGCLF_ENGINE=auto runs eager torch on this CPU: %s", problem)
    return "torch" if problem else "openvino"


def _openvino_problem() -> str | None:
    """Why openvino cannot be imported (not installed, or installed but broken); None when it can."""
    try:
        import openvino.tools.ovc  # noqa: F401  (openvino imports without its converter, saying nothing)
    except Exception as e:  # installed without its native libraries: ImportError, OSError or RuntimeError
        if isinstance(e, ModuleNotFoundError) and e.name == "openvino":
            return NOT_INSTALLED
        return f"the openvino package is installed but cannot be imported: {type(e).__name__}: {e}"
    return None


def start(setting: str, model: nn.Module, spec: ImageSpec, device: torch.device, dtype: torch.dtype,
          threads: int) -> tuple[str, Engine]:
    """The engine ``setting`` chooses, built; ``auto`` runs torch where OpenVINO cannot convert the model."""
    name = choose(setting, device)
    if name == "openvino":
        try:
            return name, openvino_engine(model, spec, dtype, threads)
        except Exception as e:  # the converter raises its own types (OpConversionFailure and others)
            if setting != "auto":
                raise
            log.warning("IMGCLF_ENGINE=auto runs eager torch: OpenVINO could not convert the model: %s: %s",
                        type(e).__name__, e)
    return "torch", torch_engine(model, spec, device, dtype)


def torch_engine(model: nn.Module, spec: ImageSpec, device: torch.device, dtype: torch.dtype) -> Engine:
    model = model.to(device, dtype=dtype, memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def infer(images: torch.Tensor) -> torch.Tensor:
        return model(normalize(images, spec, device, dtype)).float().softmax(1).cpu()

    return infer


class Probabilities(nn.Module):
    """The network with serving's normalisation before it and a softmax after, as one graph to convert."""

    def __init__(self, model: nn.Module, spec: ImageSpec):
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(images, self.spec, CPU)).softmax(1)


def openvino_engine(model: nn.Module, spec: ImageSpec, dtype: torch.dtype, threads: int) -> Engine:
    """The model converted in memory (batch size left open) and compiled for this CPU."""
    import openvino as ov

    side = spec.image_size
    with torch.no_grad(), warnings.catch_warnings(action="ignore"):  # the tracer's notes and deprecation
        traced = torch.jit.trace(Probabilities(model.float().eval(), spec),
                                 torch.zeros(1, 3, side, side, dtype=torch.uint8), check_trace=False)
    graph = ov.convert_model(traced, input=[([-1, 3, side, side], ov.Type.u8)])
    compiled = ov.Core().compile_model(graph, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                      "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[dtype]})

    def infer(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(compiled(images.numpy())[0].copy())

    return infer
