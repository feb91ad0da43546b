"""`python scripts/tune.py`: imgclf_launch.tune (`pip install -e scripts`; README)."""
from entry import run

run("tune")
