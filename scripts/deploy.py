"""`python scripts/deploy.py`: imgclf_launch.deploy (`pip install -e scripts`; README)."""
from entry import run

run("deploy")
