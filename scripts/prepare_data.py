"""`python scripts/prepare_data.py`: imgclf_launch.prepare_data (`pip install -e scripts`; README)."""
from entry import run

run("prepare_data")
