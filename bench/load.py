"""Bounded load on a running server: p50/p99 latency and requests/s at several concurrencies.

    python bench/load.py --url http://127.0.0.1:8080 --image local_test/data/test/004.three/digit_0012.png

Each level sends at most --requests requests and stops after --seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests


@dataclass(frozen=True)
class Result:
    concurrency: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    rps: float


def measure(url: str, body: bytes, content_type: str, concurrency: int, total: int, seconds: float) -> Result:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(total))
    deadline = time.monotonic() + seconds

    def worker() -> None:
        nonlocal errors
        session = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                if next(counter, None) is None:
                    return
            start = time.perf_counter()
            try:
                ok = session.post(url + "/invocations", data=body, headers={"Content-Type": content_type}, timeout=60).ok
            except requests.RequestException:
                ok = False
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                errors += not ok

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return Result(concurrency, len(latencies), errors, cuts[49] * 1000, cuts[98] * 1000, len(latencies) / wall)


def run_levels(url: str, body: bytes, content_type: str, levels: list[int], total: int, seconds: float, warmup: int = 5) -> list[Result]:
    measure(url, body, content_type, 1, warmup, seconds)
    return [measure(url, body, content_type, c, total, seconds) for c in levels]


def print_table(title: str, results: list[Result]) -> None:
    print(title)
    print(f"  {'concurrency':>11} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for r in results:
        print(f"  {r.concurrency:>11} {r.requests:>8} {r.errors:>6} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {r.rps:>8.1f}")


def add_level_arguments(parser: argparse.ArgumentParser, concurrency: str = "1,8,32", requests: int = 300,
                        seconds: float = 30) -> None:
    """--concurrency, --requests, --seconds: the load levels every serving benchmark takes."""
    parser.add_argument("--concurrency", default=concurrency, help=f"comma-separated levels (default {concurrency})")
    parser.add_argument("--requests", type=int, default=requests, help="at most this many requests per level")
    parser.add_argument("--seconds", type=float, default=seconds, help="at most this long per level")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--content-type", default="application/x-image")
    add_level_arguments(parser)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    results = run_levels(args.url, args.image.read_bytes(), args.content_type, levels, args.requests, args.seconds)
    print_table(f"{args.url} with {args.image.name}", results)


if __name__ == "__main__":
    main()
