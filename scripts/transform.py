"""`python scripts/transform.py`: imgclf_launch.transform (`pip install -e scripts`; README)."""
from entry import run

run("transform")
