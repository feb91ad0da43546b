"""Compiled CPU runtimes against eager torch: ResNet-50 forward only, the same weights, the same cores.

    make bench-compiled          # builds build/compiled (torch, ONNX Runtime, OpenVINO), then runs this
    build/compiled/bin/python bench/compiled.py --batches 1,8 --rounds 5

The model is exported once to ONNX; ONNX Runtime runs it in fp32, OpenVINO in fp32 and bf16
(its inference precision hint; bf16 runs natively on AVX512-BF16/AMX CPUs), and in int8 when
NNCF is installed (post-training quantisation on 16 synthetic images; with random weights this
shows speed, not the accuracy a trained model keeps). Engines are timed in
interleaved rounds (each round times every engine once, the median over rounds is reported), so
load that comes and goes on a shared host falls on all of them alike. Agreement: top-1 on a few
images against eager fp32, and the largest logit error relative to the largest logit.
Needs no imgclf package: it runs in a venv of its own, the image is not touched.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchvision import models

Engine = Callable[[np.ndarray], np.ndarray]


def eager(model: torch.nn.Module, dtype: torch.dtype) -> Engine:
    net = model.to(dtype=dtype, memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(x).to(dtype).contiguous(memory_format=torch.channels_last)
        return net(inputs).float().numpy()

    return run


def onnx_runtime(path: Path, threads: int) -> Engine:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino(path: Path, threads: int, precision: str) -> Engine:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision,
                                                          "PERFORMANCE_HINT": "LATENCY"})
    return lambda x: compiled(x)[0]


def openvino_int8(path: Path, threads: int, calibration: np.ndarray) -> Engine:
    """OpenVINO int8: NNCF's post-training quantisation, calibrated on ``calibration`` one image at a time."""
    import nncf
    import openvino as ov

    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    quantized = nncf.quantize(ov.Core().read_model(str(path)), dataset, subset_size=len(calibration))
    compiled = ov.Core().compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    return lambda x: compiled(x)[0]


def export(model: torch.nn.Module, side: int, path: Path) -> None:
    example = torch.randn(1, 3, side, side)
    torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)


def test_images(count: int, side: int, seed: int = 0) -> np.ndarray:
    """Smooth colour fields with noise, normalised like ImageNet inputs: not photos, but not flat either."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, side, dtype=np.float32)
    images = []
    for _ in range(count):
        a, b, c = rng.uniform(-2, 2, 3)
        base = np.sin(a * 6 * grid[None, :] + b * 4 * grid[:, None] + c)
        image = np.stack([base * rng.uniform(0.5, 1.5) + rng.normal(0, 0.3, (side, side)) for _ in range(3)])
        images.append(image.astype(np.float32))
    return np.stack(images)


def agreement(engines: dict[str, Engine], images: np.ndarray) -> dict[str, tuple[float, float]]:
    reference = engines["torch fp32"](images)
    out = {}
    for name, engine in engines.items():
        logits = engine(images)
        same = float(np.mean(logits.argmax(1) == reference.argmax(1)))
        error = float(np.abs(logits - reference).max() / np.abs(reference).max())
        out[name] = (same, error)
    return out


def interleaved(engines: dict[str, Engine], batch: np.ndarray, rounds: int) -> dict[str, float]:
    """Median images/s of each engine over ``rounds`` rounds, each round timing every engine once."""
    for engine in engines.values():
        engine(batch)  # warm-up: first-call compilation and allocation
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine(batch)
            times[name].append(time.perf_counter() - start)
    return {name: len(batch) / statistics.median(t) for name, t in times.items()}


def on_thread(work, *args):
    """``work(*args)`` on a thread of its own, where serving runs its model (see bench/forward.py's sweep)."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(work, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=133)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = models.resnet50(num_classes=args.classes).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50.onnx"
        export(model, args.image_size, path)
        engines = {"torch fp32": eager(copy.deepcopy(model), torch.float32),
                   "torch bf16": eager(copy.deepcopy(model), torch.bfloat16),
                   "ONNX Runtime fp32": onnx_runtime(path, args.threads),
                   "OpenVINO fp32": openvino(path, args.threads, "f32"),
                   "OpenVINO bf16": openvino(path, args.threads, "bf16")}
        if importlib.util.find_spec("nncf"):
            engines["OpenVINO int8"] = openvino_int8(path, args.threads, test_images(16, args.image_size, seed=99))
        else:
            print("OpenVINO int8 left out: nncf is not installed (pip install nncf)")
        match = agreement(engines, test_images(8, args.image_size))
        rates = {b: on_thread(interleaved, engines, test_images(b, args.image_size, seed=b), args.rounds)
                 for b in [int(b) for b in args.batches.split(",")]}
    print(f"ResNet-50, {args.classes} classes, {args.image_size} px, random weights, {args.threads} threads, "
          f"median of {args.rounds} interleaved rounds")
    print(f"  {'engine':>18} " + " ".join(f"{'batch ' + str(b):>9}" for b in rates) + f" {'x torch, same precision':>8} {'top-1 = torch fp32':>7} {'max error':>8}")
    for name in engines:
        top = max(rates[b][name] for b in rates)
        torch_top = max(rates[b]["torch fp32" if "fp32" in name else "torch bf16"] for b in rates)  # int8: against bf16
        same, error = match[name]
        print(f"  {name:>18} " + " ".join(f"{rates[b][name]:>9.1f}" for b in rates)
              + f" {top / torch_top:>7.2f}x {same:>7.0%} {error:>8.1e}")


if __name__ == "__main__":
    main()
