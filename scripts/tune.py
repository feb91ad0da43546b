"""`python scripts/tune.py`: imgclf_launch.tune (`pip install -e scripts`; README)."""
from entry import run

if __name__ == "__main__":  # not on import: paramiko imports a module named "invoke" when it finds one
    run("tune")
