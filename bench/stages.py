"""Where a request's time goes inside the app: decode, queue, batch assembly, forward, the rest.

    python bench/stages.py                                  # ResNet-50 224 px, random weights, concurrency 1 and 32
    python bench/stages.py --model-dir build/demo/model --concurrency 1,8,32 --requests 200
    IMGCLF_MAX_BATCH_SIZE=16 IMGCLF_TORCH_THREADS=1 python bench/stages.py   # any serving setting

The app runs in this process, with serve's allocator settings (bench/inprocess.py: werkzeug's
threaded server, no nginx or gunicorn; the nginx hop is under 1 ms) with its own Predictor and
Batcher, timestamped from outside:
- decode: Predictor.preprocess (bytes -> uint8 crop), in the request thread;
- queue: from Batcher.submit until the batcher thread takes the request into a batch;
- assemble: from being taken until the forward pass starts (waiting up to max_batch_wait_ms for
  requests still decoding, then stacking);
- forward: the batch's Predictor._infer (normalise, network, softmax), shared by its requests;
- handoff: from the end of the forward pass until classify returns in the request thread (top-k, wake-up);
- http: the client's mean latency (concurrency / req/s) minus classify's (werkzeug, Flask, JSON,
  loopback, the client, and any wait for a request thread or the GIL).
Means per request in milliseconds, plus the batch sizes the batcher formed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from inprocess import app_server  # python bench/stages.py: bench/ is on sys.path, as the script's folder
from load import add_level_arguments, measure
from photos import write_photo_dataset
from random_model import model_dir_or_random

from imgclf.serving.predictor import Batcher, Predictor
from imgclf.serving.server import start_with_allocator_env

STAGES = ("decode", "queue", "assemble", "forward", "handoff", "http")


class Stamps:
    """Timestamps patched onto Predictor and Batcher; one record per classify call."""

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []
        self.batches: Counter[int] = Counter()
        self.local = threading.local()
        self.lock = threading.Lock()

    def install(self) -> None:
        stamps = self
        preprocess, submit, next_batch, infer, classify = (Predictor.preprocess, Batcher.submit, Batcher._next_batch,
                                                           Predictor._infer, Predictor.classify)

        def timed_preprocess(predictor, payload, *args):
            start = time.perf_counter()
            try:
                return preprocess(predictor, payload, *args)
            finally:
                stamps.local.decode = getattr(stamps.local, "decode", 0.0) + time.perf_counter() - start

        def timed_submit(batcher, images, *args, **kwargs):
            future = submit(batcher, images, *args, **kwargs)
            future.stamps = {"submitted": time.perf_counter()}
            stamps.local.future = future
            return future

        def timed_next_batch(batcher):
            jobs = next_batch(batcher)
            now = time.perf_counter()
            for job in jobs:
                getattr(job.future, "stamps", {})["taken"] = now
            stamps.local.jobs = jobs  # the batcher thread: _infer runs these next
            with stamps.lock:
                stamps.batches[sum(len(job.images) for job in jobs)] += 1
            return jobs

        def timed_infer(predictor, images):
            start = time.perf_counter()
            try:
                return infer(predictor, images)
            finally:
                end = time.perf_counter()
                for job in getattr(stamps.local, "jobs", []):
                    getattr(job.future, "stamps", {}).update(forward_start=start, forward_end=end)

        def timed_classify(predictor, payloads, *args):
            stamps.local.decode = 0.0
            start = time.perf_counter()
            result = classify(predictor, payloads, *args)
            stamps.record(start, time.perf_counter(), stamps.local.decode, stamps.local.future.stamps)
            return result

        Predictor.preprocess, Batcher.submit, Batcher._next_batch = timed_preprocess, timed_submit, timed_next_batch
        Predictor._infer, Predictor.classify = timed_infer, timed_classify

    def record(self, start: float, end: float, decode: float, s: dict[str, float]) -> None:
        if "forward_end" not in s:
            return  # a warm-up job, or one dropped before it ran
        with self.lock:
            self.records.append({"classify": end - start, "decode": decode, "queue": s["taken"] - s["submitted"],
                                 "assemble": s["forward_start"] - s["taken"], "forward": s["forward_end"] - s["forward_start"],
                                 "handoff": end - s["forward_end"]})

    def reset(self) -> None:
        with self.lock:
            self.records, self.batches = [], Counter()


def profile_level(url: str, photo: bytes, stamps: Stamps, concurrency: int, requests: int, seconds: float) -> dict:
    stamps.reset()
    result = measure(url, photo, "image/jpeg", concurrency, requests, seconds)
    with stamps.lock:
        records, batches = list(stamps.records), dict(stamps.batches)
    means = {k: statistics.mean(r[k] for r in records) * 1000 for k in records[0]} if records else {}
    client_ms = concurrency / result.rps * 1000 if result.rps else 0.0  # Little's law: a closed loop of `concurrency` clients
    means["http"] = max(0.0, client_ms - means.get("classify", 0.0))
    return {"result": result, "means": means, "batches": batches}


def print_profile(levels: list[dict], config) -> None:
    print(f"stages per request, ms (means), in-process app: max batch {config.max_batch_size}, wait {config.max_batch_wait_ms} ms, "
          f"{config.torch_threads} torch threads, {config.decode_slots} decode slots, {os.cpu_count()} CPUs")
    print(f"  {'concurrency':>11} {'req/s':>7} " + " ".join(f"{s:>9}" for s in STAGES) + "   batch sizes formed (size: count)")
    for level in levels:
        r, m = level["result"], level["means"]
        sizes = " ".join(f"{k}:{v}" for k, v in sorted(level["batches"].items()))
        print(f"  {r.concurrency:>11} {r.rps:>7.2f} " + " ".join(f"{m.get(s, 0.0):>9.1f}" for s in STAGES) + f"   {sizes}")


def main() -> None:
    start_with_allocator_env()  # the allocator settings serve runs with
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="artifacts from train (default: a random ResNet-50)")
    add_level_arguments(parser, "1,32", 100, 60)
    args = parser.parse_args()
    stamps = Stamps()
    stamps.install()
    settings = {k: v for k, v in os.environ.items() if k.startswith(("IMGCLF_", "SAGEMAKER_"))}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model_dir_or_random(args.model_dir, Path(tmp))
        photo = next((write_photo_dataset(Path(tmp) / "photos", 1)).rglob("*.jpg")).read_bytes()
        with app_server(model_dir, photo, settings) as (url, config):
            measure(url, photo, "image/jpeg", 1, 3, args.seconds)  # warm-up
            levels = [profile_level(url, photo, stamps, int(c), args.requests, args.seconds)
                      for c in args.concurrency.split(",")]
    print_profile(levels, config)


if __name__ == "__main__":
    main()
