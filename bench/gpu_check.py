"""The GPU proof: what this image's code does on one NVIDIA GPU, in one run of under 10 minutes.

    bench/gpu_check.sh                 # on a machine with one GPU (make gpu-check); writes gpu_check.json
    bench/gpu_check.sh --dry           # the same code paths on the CPU at toy sizes (or GPU_CHECK_DRY=1)

Needs python3 with torch and torchvision, and this repository's other imports (Flask, its
blinker and itsdangerous: ``make gpu-wheels`` downloads them for a machine without network).
Measures: training throughput of ours against a baseline written the usual way (ImageFolder + PIL
transforms, fp32: bench/baseline.py, via bench/train.py);
forward-only throughput per precision and memory layout (bench/forward.py); the Flask app
in-process with concurrent client threads (bench/load.py); the precision ``auto`` chooses; and
``doctor``'s verdict. Each part that fails is recorded with its error; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

import forward  # python bench/gpu_check.py: bench/ is on sys.path, as the script's folder
from inprocess import app_server
from load import run_levels
from photos import write_photo_dataset
from random_model import write_random_model

DRY_ENV = "GPU_CHECK_DRY"


@dataclass(frozen=True)
class Sizes:
    arch: str
    image_size: int
    classes: int
    train_images: int
    epochs: int
    train_batch: int
    forward_batches: tuple[int, ...]
    forward_seconds: float
    precisions: tuple[str, ...]
    serve_levels: tuple[int, ...]
    serve_requests: int
    serve_seconds: float


# FULL fits 10 minutes on one H100 with 16 cores: training 2 x 2 x 2,048 images at 224 px, 24
# forward points of 2 s, 3 serving levels of at most 20 s.
FULL = Sizes("resnet50", 224, 133, 2048, 2, 128, (32, 64, 128, 256), 2.0, ("fp32", "bf16", "fp16"),
             (1, 8, 32), 1000, 20.0)
DRY = Sizes("resnet18", 32, 10, 16, 1, 8, (1, 4), 0.05, ("fp32", "bf16"), (1, 4), 8, 10.0)


def hardware(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "device": str(device), "host": platform.node()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)
    return info


def doctor() -> dict:
    """``python -m imgclf.doctor``: its exit status and report."""
    result = subprocess.run([sys.executable, "-m", "imgclf.doctor"], capture_output=True, text=True, timeout=120)
    lines = result.stdout.strip().splitlines()
    verdict = next((line for line in reversed(lines) if line.startswith("verdict:")), result.stderr.strip()[-300:])
    return {"exit": result.returncode, "verdict": verdict, "report": lines}


def chosen_precision(device: torch.device) -> dict:
    from imgclf import precision

    names = {dtype: name for name, dtype in forward.PRECISIONS.items()}
    return {purpose: names[precision.for_device("auto", purpose, device)] for purpose in ("train", "serve")}


def training(data: Path, sizes: Sizes, device: torch.device) -> dict:
    from baseline import train_baseline
    from train import train_ours

    torch.manual_seed(0)
    base = train_baseline(data, sizes.arch, sizes.image_size, sizes.epochs, sizes.train_batch, device)
    args = SimpleNamespace(arch=sizes.arch, epochs=sizes.epochs, batch_size=sizes.train_batch,
                           image_size=sizes.image_size, images=sizes.train_images)
    ours = train_ours(data, args, "auto")
    return {"baseline_images_per_s": base, "ours_images_per_s": ours, "ratio": ours / base}


def forward_only(model_dir: Path, sizes: Sizes, device: torch.device) -> dict:
    from imgclf.model import load_artifacts

    model, spec, _ = load_artifacts(model_dir)
    results = forward.sweep(model, spec.image, device, list(sizes.precisions), list(forward.LAYOUTS),
                            list(sizes.forward_batches), sizes.forward_seconds)
    return {"all": forward.as_json(results),
            "best": [asdict(r) for r in forward.best(results).values()]}


def serving(model_dir: Path, photo: bytes, sizes: Sizes) -> dict:
    """The Flask app in this process behind werkzeug's threaded server (no nginx, no gunicorn)."""
    with app_server(model_dir, photo) as (url, config):
        results = run_levels(url, photo, "image/jpeg", list(sizes.serve_levels), sizes.serve_requests, sizes.serve_seconds)
    return {"max_batch": config.max_batch_size, "max_wait_ms": config.max_batch_wait_ms,
            "levels": [asdict(r) for r in results]}


def run_part(report: dict, name: str, part, *args) -> None:
    """One measurement into report[name]; its error instead when it fails, so the others still run."""
    start = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
    try:
        report[name] = part(*args)
    except Exception as e:
        report[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    report.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)


def measure(sizes: Sizes, work: Path) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if sizes is DRY:
        torch.set_num_threads(1)  # toy sizes: a second thread only adds spin-waiting on a busy host
    report: dict = {"dry": sizes is DRY, "sizes": asdict(sizes), "hardware": hardware(device)}
    run_part(report, "doctor", doctor)
    run_part(report, "precision", chosen_precision, device)
    data = write_photo_dataset(work / "photos", sizes.train_images)
    photo = next(data.rglob("*.jpg")).read_bytes()
    model_dir = work / "model"
    write_random_model(model_dir, sizes.arch, sizes.classes, sizes.image_size)
    run_part(report, "training", training, data, sizes, device)
    run_part(report, "forward", forward_only, model_dir, sizes, device)
    run_part(report, "serving", serving, model_dir, photo, sizes)
    return report


def table(report: dict) -> list[str]:
    hw, s = report["hardware"], report["sizes"]
    lines = [f"GPU check{' (DRY: CPU, toy sizes)' if report['dry'] else ''}: {hw.get('gpu', 'no GPU')} "
             f"{hw.get('capability', '')}, torch {hw['torch']}, CUDA {hw.get('cuda', '-')}, {hw['cpus']} CPUs; "
             f"{s['arch']} at {s['image_size']} px"]
    lines += _section(report, "doctor", lambda d: [f"  doctor: exit {d['exit']}, {d['verdict']}"])
    lines += _section(report, "precision", lambda p: [f"  precision auto: train {p['train']}, serve {p['serve']}"])
    lines += _section(report, "training", lambda t: [
        f"  training images/s: baseline {t['baseline_images_per_s']:.1f}, ours {t['ours_images_per_s']:.1f}"
        f" = {t['ratio']:.2f}x"])
    lines += _section(report, "forward", lambda f: ["  forward only (best batch): precision layout batch images/s"] + [
        f"    {r['precision']:>5} {r['layout']:>13} {r['batch']:>5} {r['images_per_s']:>9.1f}" for r in f["best"]])
    lines += _section(report, "serving", lambda v: [
        f"  serving in-process (max batch {v['max_batch']}, wait {v['max_wait_ms']} ms): concurrency req/s p50 p99 errors"] + [
        f"    {r['concurrency']:>5} {r['rps']:>8.1f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['errors']:>4}" for r in v["levels"]])
    lines.append("  seconds per part: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))
    return lines


def _section(report: dict, name: str, render) -> list[str]:
    part = report.get(name)
    if part is None:
        return [f"  {name}: not run"]
    if "error" in part:
        return [f"  {name}: FAILED: {part['error']}"]
    return render(part)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", default=os.environ.get(DRY_ENV, "") not in ("", "0"),
                        help=f"CPU, toy sizes, under a minute (also {DRY_ENV}=1)")
    parser.add_argument("--json", type=Path, default=Path(os.environ.get("OUT", "build")) / "gpu_check.json")
    args = parser.parse_args()
    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: torch sees no GPU here; run with --dry to exercise the code on the CPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        report = measure(DRY if args.dry else FULL, Path(tmp))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print("\n".join(table(report)))
    print(f"wrote {args.json}")
    failed = [name for name in ("doctor", "precision", "training", "forward", "serving") if "error" in report[name]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
