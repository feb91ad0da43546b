"""The model alone: forward-only throughput per precision and memory layout, and the decode cost.

    python bench/forward.py                       # ResNet-50, 224 px, 133 classes, random weights
    python bench/forward.py --model-dir build/demo/model --batches 1,8,16

No HTTP, no decoding, no batcher: the same network, cast the way ``serve`` casts it, fed batches
of one uniform-random uint8 image normalised on the device. Its best rate is the limit a server on
the same cores can approach; ``serve`` divided by it says how much the server itself costs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from imgclf.model import load_artifacts
from imgclf.preprocess import ImageSpec, decode_for_eval, normalize
from imgclf.serving import engines

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Forward:
    engine: str
    precision: str
    layout: str
    batch: int
    images_per_s: float
    ms_per_batch: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(batch: int, spec: ImageSpec) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, spec.image_size, spec.image_size), dtype=torch.uint8)


@torch.inference_mode()
def time_forward(model: nn.Module, spec: ImageSpec, batch: int, dtype: torch.dtype, layout: torch.memory_format,
                 device: torch.device, seconds: float) -> float:
    """Median seconds per batch of eager torch, cast as ``serve`` casts it."""
    images = random_batch(batch, spec)
    return time_calls(lambda: model(normalize(images, spec, device, dtype).contiguous(memory_format=layout)),
                      device, seconds)


def time_calls(work, device: torch.device, seconds: float, min_runs: int = 3) -> float:
    """Median seconds per ``work()``, after one warm-up call; runs at least ``min_runs``, then until ``seconds``."""
    work()
    _sync(device)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        work()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sweep(model: nn.Module, spec: ImageSpec, device: torch.device, precisions: list[str], layouts: list[str],
          batches: list[int], seconds: float) -> list[Forward]:
    """Every precision x layout x batch; the caller picks the best batch of each pair. The model runs on
    a thread of its own, as in ``serve``: with 2 intra-op threads on a busy 2-core host, ResNet-50 ran
    2-3x slower called from the main thread than from another one (torch 2.14, oneDNN)."""
    results: list[Forward] = []
    with ThreadPoolExecutor(1, thread_name_prefix="forward") as thread:  # serve runs the model on its batcher thread
        for precision in precisions:
            for layout in layouts:
                net = model.to(device, dtype=PRECISIONS[precision], memory_format=LAYOUTS[layout]).eval()
                for batch in batches:
                    per_batch = thread.submit(time_forward, net, spec, batch, PRECISIONS[precision], LAYOUTS[layout],
                                              device, seconds).result()
                    results.append(Forward("torch", precision, layout, batch, batch / per_batch, per_batch * 1000))
        model.to("cpu", dtype=torch.float32, memory_format=torch.contiguous_format)
        if device.type == "cpu" and engines.choose("auto", device) == "openvino":
            for precision in precisions:
                results += thread.submit(_openvino, model, spec, precision, batches, seconds).result()
    return results


def _openvino(model: nn.Module, spec: ImageSpec, precision: str, batches: list[int], seconds: float) -> list[Forward]:
    """The engine ``serve`` runs on CPUs (imgclf.serving.engines): normalisation, network and softmax, compiled."""
    infer = engines.openvino_engine(model, spec, PRECISIONS[precision], torch.get_num_threads())
    per_batch = {batch: time_calls(lambda b=random_batch(batch, spec): infer(b), CPU, seconds) for batch in batches}
    return [Forward("openvino", precision, "-", b, b / t, t * 1000) for b, t in per_batch.items()]


def best(results: list[Forward]) -> dict[tuple[str, str, str], Forward]:
    """The fastest batch size of each (engine, precision, layout)."""
    top: dict[tuple[str, str, str], Forward] = {}
    for r in results:
        key = (r.engine, r.precision, r.layout)
        if key not in top or r.images_per_s > top[key].images_per_s:
            top[key] = r
    return top


def timed_ms(work, runs: int = 20) -> float:
    """Median milliseconds of ``work()``, after one untimed call."""
    work()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def decode_ms(payload: bytes, spec: ImageSpec, runs: int = 20) -> float:
    """Median milliseconds to turn the JPEG into the uint8 CHW crop ``serve`` batches (one thread)."""
    return timed_ms(lambda: decode_for_eval(payload, spec, 64_000_000), runs)


def on_thread(work, *args):
    """``work(*args)`` on a thread of its own (see :func:`sweep` for why)."""
    with ThreadPoolExecutor(1, thread_name_prefix="bench") as thread:
        return thread.submit(work, *args).result()


def print_forward(results: list[Forward], title: str) -> None:
    print(title)
    print(f"  {'engine':>8} {'precision':>9} {'layout':>13} {'best batch':>10} {'ms/batch':>9} {'images/s':>9}"
          "   (other batches: images/s)")
    for key, top in best(results).items():
        others = " ".join(f"{r.batch}:{r.images_per_s:.1f}" for r in results
                          if (r.engine, r.precision, r.layout) == key and r.batch != top.batch)
        print(f"  {top.engine:>8} {top.precision:>9} {top.layout:>13} {top.batch:>10} {top.ms_per_batch:>9.1f} "
              f"{top.images_per_s:>9.1f}   {others}")


def as_json(results: list[Forward]) -> list[dict]:
    return [asdict(r) for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="artifacts from train (default: a random ResNet-50)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--layouts", default="contiguous,channels_last")
    parser.add_argument("--batches", default="1,8,16")
    parser.add_argument("--seconds", type=float, default=3, help="at least this long per batch size")
    args = parser.parse_args()
    from random_model import model_dir_or_random  # python bench/forward.py: bench/ is on sys.path

    with tempfile.TemporaryDirectory() as tmp:
        model, spec, _ = load_artifacts(model_dir_or_random(args.model_dir, Path(tmp)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = sweep(model, spec.image, device, args.precisions.split(","), args.layouts.split(","),
                    [int(b) for b in args.batches.split(",")], args.seconds)
    print_forward(results, f"forward only, {spec.arch} at {spec.image.image_size} px, on {device}, "
                           f"{torch.get_num_threads()} torch threads")


if __name__ == "__main__":
    main()
