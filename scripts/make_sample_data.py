"""`python scripts/make_sample_data.py`: imgclf_launch.sample_data (`pip install -e scripts`; README)."""
from entry import run

run("sample_data")
