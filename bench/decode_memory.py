"""Peak memory of decoding for serving, one fresh process per image: the costliest image of each
accepted format at 8000x8000 (bombs.LARGEST), then the hostile images (bombs.BOMBS).

    .venv/bin/python bench/decode_memory.py

Prints, per image: its size on the wire, the decode's peak RSS above the process's before it
(VmHWM, reset first through /proc/self/clear_refs), the time, and the outcome (the crop's shape, or the refusal and its status class).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from bombs import bombs, largest  # python bench/decode_memory.py: bench/ is on sys.path, as the script's folder


MEASURE = """
import re, sys, time
from pathlib import Path
from imgclf.preprocess import ImageError, ImageSpec, decode_for_eval
def status(field):  # kB
    return int(re.search(field + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
body = Path({path!r}).read_bytes()
Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
before, start = status("VmRSS"), time.perf_counter()
try:
    outcome = tuple(decode_for_eval(body, ImageSpec(224), 64_000_000).shape)
except ImageError as e:
    outcome = type(e).__name__
peak = status("VmHWM") - before
print(f"{{len(body):>11,}} bytes  peak +{{peak / 1024:5.0f}} MB  {{time.perf_counter() - start:5.2f}} s  {{outcome}}")
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for i, (name, body) in enumerate({**largest(), **bombs()}.items()):
            path = Path(folder) / f"{i}.img"  # the measuring process reads it: it never builds an image
            path.write_bytes(body)
            result = subprocess.run([sys.executable, "-c", MEASURE.format(path=str(path))],
                                    capture_output=True, text=True, check=True)
            print(f"{name:42s} {result.stdout.strip()}", flush=True)


if __name__ == "__main__":
    main()
