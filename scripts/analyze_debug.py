"""`python scripts/analyze_debug.py`: imgclf_launch.analyze_debug (`pip install -e scripts`; README)."""
from entry import run

run("analyze_debug")
