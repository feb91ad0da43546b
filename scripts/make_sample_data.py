"""`python scripts/make_sample_data.py`: imgclf_launch.sample_data (`pip install -e scripts`; README)."""
from entry import run

if __name__ == "__main__":  # not on import: paramiko imports a module named "invoke" when it finds one
    run("sample_data")
