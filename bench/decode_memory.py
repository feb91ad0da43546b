"""Peak memory of decoding each of bench/bombs.py's images for serving, one fresh process per image.

    .venv/bin/python bench/decode_memory.py

Prints, per image: its size on the wire, the decode's peak RSS above the process's before it
(ru_maxrss), the time, and the outcome (the crop's shape, or the refusal).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from bombs import bombs  # python bench/decode_memory.py: bench/ is on sys.path, as the script's folder


MEASURE = """
import resource, sys, time
from pathlib import Path
from imgclf.preprocess import ImageError, ImageSpec, decode_for_eval
body = Path({path!r}).read_bytes()
before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
try:
    outcome = tuple(decode_for_eval(body, ImageSpec(224), 64_000_000).shape)
except ImageError as e:
    outcome = type(e).__name__
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(f"{{len(body):>9,}} bytes  peak +{{peak / 1024:5.0f}} MB  {{time.perf_counter() - start:5.2f}} s  {{outcome}}")
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for i, (name, body) in enumerate(bombs().items()):
            path = Path(folder) / f"{i}.img"  # the measuring process reads it: it never builds an image
            path.write_bytes(body)
            result = subprocess.run([sys.executable, "-c", MEASURE.format(path=str(path))],
                                    capture_output=True, text=True, check=True)
            print(f"{name:38s} {result.stdout.strip()}")


if __name__ == "__main__":
    main()
