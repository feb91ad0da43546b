"""Where this source checkout is: the launchers run from it (``pip install -e scripts``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
