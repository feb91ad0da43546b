"""`python scripts/train_debug.py`: imgclf_launch.train_debug (`pip install -e scripts`; README)."""
from entry import run

run("train_debug")
