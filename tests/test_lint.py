"""Static checks a test run would otherwise miss: a name that is undefined on a path the tests never
take only fails on a customer's host (gpu.py once raised NameError instead of naming a too-old
driver, on the one branch only a real R470 GPU host reaches)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from imgclf_launch.paths import REPO

CHECKED = ("container", "scripts", "bench", "tests")


def test_no_undefined_names_unused_imports_or_syntax_errors():
    """ruff's pyflakes rules (F: undefined names, unused imports and variables, redefinitions) and
    syntax errors (E9) over every Python file we ship or run."""
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "--select", "F,E9", "--no-cache", "--output-format", "concise", *CHECKED],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
