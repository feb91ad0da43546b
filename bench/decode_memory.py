"""Peak memory of decoding for serving, one fresh process per image: the costliest image of each
accepted format at 8000x8000 (bombs.LARGEST), then the hostile images (bombs.BOMBS).

    .venv/bin/python bench/decode_memory.py

Prints, per image: its size on the wire, the decode's peak RSS above the process's before it
(VmHWM, reset first through /proc/self/clear_refs), the time, the longest any other thread of the
process waited meanwhile (gunicorn's heartbeat is one), and the outcome (the crop's shape, or
the refusal).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from bombs import bombs, largest  # python bench/decode_memory.py: bench/ is on sys.path, as the script's folder


MEASURE = """
import re, sys, threading, time
from pathlib import Path
from imgclf.preprocess import ImageError, ImageSpec, decode_for_eval
def status(field):  # kB
    return int(re.search(field + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
stalls, done = [0.0], threading.Event()
def tick():  # another thread, as gunicorn's heartbeat: how long it waits for the GIL at most
    last = time.perf_counter()
    while not done.wait(0.01):
        now = time.perf_counter()
        stalls[0], last = max(stalls[0], now - last - 0.01), now
body = Path({path!r}).read_bytes()
Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
before, start = status("VmRSS"), time.perf_counter()
threading.Thread(target=tick).start()
try:
    outcome = tuple(decode_for_eval(body, ImageSpec(224), 64_000_000).shape)
except ImageError as e:
    outcome = type(e).__name__
done.set()
peak = status("VmHWM") - before
print(f"{{len(body):>11,}} bytes  peak +{{peak / 1024:5.0f}} MB  {{time.perf_counter() - start:5.2f}} s  "
      f"stall {{stalls[0]:4.2f}} s  {{outcome}}")
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
