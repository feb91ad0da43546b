"""`python scripts/local_train.py`: imgclf_launch.local_train (`pip install -e scripts`; README)."""
from entry import run

run("local_train")
