"""The engines that run the network in `serve`: which one each setting picks, and OpenVINO's answers
against eager torch's on the same weights (every arch is served by both in tests/test_archs.py)."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from imgclf.config import ENGINES, ServingConfig
from imgclf.hyperparameters import ConfigError
from imgclf.model import build_model
from imgclf.preprocess import ImageSpec
from imgclf.serving import engines

CUDA = torch.device("cuda")


def test_auto_is_openvino_on_cpus_and_torch_on_gpus():
    assert engines.choose("auto", engines.CPU) == "openvino"
    assert engines.choose("auto", CUDA) == "torch"
    assert engines.choose("torch", engines.CPU) == "torch"
    with pytest.raises(ConfigError, match="IMGCLF_ENGINE=openvino runs on CPUs only; this worker serves on cuda"):
        engines.choose("openvino", CUDA)


def broken_openvino(monkeypatch, tmp_path, error: str) -> None:
    """An openvino package that is installed but fails to import, as one missing its native libraries does."""
    (tmp_path / "openvino").mkdir()
    (tmp_path / "openvino" / "__init__.py").write_text(f"raise {error}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "openvino", raising=False)


@pytest.mark.parametrize("error", ['ImportError("libtbb.so.12: cannot open shared object file")',
                                   'RuntimeError("libtbb.so.12: cannot open shared object file")'])
def test_a_broken_openvino_is_named_as_broken_not_as_missing(monkeypatch, tmp_path, caplog, error):
    broken_openvino(monkeypatch, tmp_path, error)
    with pytest.raises(ConfigError, match=r"IMGCLF_ENGINE=openvino, but the openvino package is installed but "
                                          r"cannot be imported: \w+Error: libtbb.so.12: cannot open"):
        engines.choose("openvino", engines.CPU)
    with caplog.at_level(logging.WARNING):
        assert engines.choose("auto", engines.CPU) == "torch"
    assert "IMGCLF_ENGINE=auto runs eager torch on this CPU: the openvino package is installed but" in caplog.text


def test_an_openvino_without_its_converter_is_named_as_broken(monkeypatch, tmp_path):
    """openvino's __init__ drops its converter's ImportError: conversion would fail on a missing attribute."""
    broken_openvino(monkeypatch, tmp_path, "ImportError('hidden')")
    (tmp_path / "openvino" / "__init__.py").write_text("try:\n    from openvino.tools.ovc import convert_model\n"
                                                       "except ImportError:\n    pass\n")
    (tmp_path / "openvino" / "tools" / "ovc").mkdir(parents=True)
    (tmp_path / "openvino" / "tools" / "__init__.py").write_text("")
    (tmp_path / "openvino" / "tools" / "ovc" / "__init__.py").write_text("import tracemalloc_missing\n")
    for module in [name for name in sys.modules if name.startswith("openvino.")]:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(ConfigError, match="the openvino package is installed but cannot be imported: "
                                          "ModuleNotFoundError: No module named 'tracemalloc_missing'"):
        engines.choose("openvino", engines.CPU)


def test_a_missing_openvino_is_named_as_missing(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino: ModuleNotFoundError
    with pytest.raises(ConfigError, match="IMGCLF_ENGINE=openvino, but the openvino package is not installed"):
        engines.choose("openvino", engines.CPU)
    with caplog.at_level(logging.WARNING):
        assert engines.choose("auto", engines.CPU) == "torch"
    assert not caplog.records


def test_auto_serves_with_torch_a_model_openvino_cannot_convert(monkeypatch, caplog):
    def fails(*args):
        raise RuntimeError("Check 'is_conversion_successful' failed: aten::unknown_op")

    monkeypatch.setattr(engines, "openvino_engine", fails)
    model, spec = build_model("resnet18", 3), ImageSpec(16)
    with caplog.at_level(logging.WARNING):
        name, infer = engines.start("auto", model, spec, engines.CPU, torch.float32, 1)
    assert name == "torch" and infer(torch.zeros(2, 3, 16, 16, dtype=torch.uint8)).shape == (2, 3)
    assert "IMGCLF_ENGINE=auto runs eager torch: OpenVINO could not convert the model: RuntimeError: Check" in caplog.text
    with pytest.raises(RuntimeError, match="aten::unknown_op"):
        engines.start("openvino", model, spec, engines.CPU, torch.float32, 1)


@pytest.mark.parametrize("setting", ENGINES)
def test_every_engine_is_a_serving_setting(setting):
    assert ServingConfig.from_environ(gpus=0, cpus=2, environ={"IMGCLF_ENGINE": setting}).engine == setting


def test_an_unknown_engine_is_refused_by_name():
    with pytest.raises(ConfigError, match="IMGCLF_ENGINE"):
        ServingConfig.from_environ(gpus=0, cpus=2, environ={"IMGCLF_ENGINE": "onnx"})


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_openvino_answers_as_torch_does_at_any_batch_size(dtype, tolerance):
    torch.manual_seed(0)
    model, spec = build_model("resnet18", 5).eval(), ImageSpec(64)
    reference = engines.torch_engine(model, spec, engines.CPU, torch.float32)
    converted = engines.openvino_engine(model, spec, dtype, threads=2)
    for batch in (1, 3):
        images = torch.randint(0, 256, (batch, 3, 64, 64), dtype=torch.uint8)
        expected, answer = reference(images), converted(images)
        assert answer.shape == (batch, 5) and answer.dtype == torch.float32
        assert torch.allclose(answer.sum(1), torch.ones(batch), atol=1e-3)
        assert (answer - expected).abs().max() < tolerance
