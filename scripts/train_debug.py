"""`python scripts/train_debug.py`: imgclf_launch.train_debug (`pip install -e scripts`; README)."""
from entry import run

if __name__ == "__main__":  # not on import: paramiko imports a module named "invoke" when it finds one
    run("train_debug")
