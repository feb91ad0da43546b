"""`python scripts/invoke.py`: imgclf_launch.invoke (`pip install -e scripts`; README)."""
from entry import run

run("invoke")
