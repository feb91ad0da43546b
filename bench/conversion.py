"""How long a `serve` worker spends converting its model to OpenVINO: `torch.jit.trace` (what serve
does) against `torch.export`, the same module, the same answers.

    .venv/bin/python bench/conversion.py --archs resnet50,efficientnet_v2_s --sizes 224,64 --rounds 3

Rounds alternate the two ways; the median per way is printed with the largest difference between
their answers on a random uint8 batch.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torchvision import models

from imgclf.preprocess import ImageSpec
from imgclf.serving import engines


def by_export(model: torch.nn.Module, spec: ImageSpec) -> engines.Engine:
    """openvino_engine's conversion, with torch.export in place of torch.jit.trace."""
    import openvino as ov

    side, batch = spec.image_size, torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        exported = torch.export.export(engines.Probabilities(model.float().eval(), spec),
                                       (torch.zeros(2, 3, side, side, dtype=torch.uint8),), dynamic_shapes=({0: batch},))
    graph = ov.convert_model(exported, input=[([-1, 3, side, side], ov.Type.u8)])
    compiled = ov.Core().compile_model(graph, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                      "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    return lambda images: torch.from_numpy(compiled(images.numpy())[0].copy())


def by_trace(model: torch.nn.Module, spec: ImageSpec) -> engines.Engine:
    return engines.openvino_engine(model, spec, torch.float32, torch.get_num_threads())


def compare(arch: str, side: int, rounds: int) -> tuple[float, float, float]:
    """Median seconds to a compiled model by trace and by export, and their answers' largest difference."""
    model, spec = getattr(models, arch)(num_classes=133).eval(), ImageSpec(side)
    images = torch.randint(0, 256, (3, 3, side, side), dtype=torch.uint8)
    seconds: dict[str, list[float]] = {"trace": [], "export": []}
    answers = {}
    for _ in range(rounds):
        for name, convert in (("trace", by_trace), ("export", by_export)):
            start = time.perf_counter()
            infer = convert(model, spec)
            seconds[name].append(time.perf_counter() - start)
            answers[name] = infer(images)
    return (statistics.median(seconds["trace"]), statistics.median(seconds["export"]),
            (answers["trace"] - answers["export"]).abs().max().item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="resnet50")
    parser.add_argument("--sizes", default="224", help="image size per arch, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the tracer's deprecation notice
    print(f"{'arch':<20} {'px':>4} {'trace s':>8} {'export s':>9} {'ratio':>6} {'max diff':>9}")
    for arch, side in zip(args.archs.split(","), map(int, args.sizes.split(",")), strict=True):
        trace, export, diff = compare(arch, side, args.rounds)
        print(f"{arch:<20} {side:>4} {trace:>8.2f} {export:>9.2f} {export / trace:>6.1f} {diff:>9.1e}")


if __name__ == "__main__":
    main()
