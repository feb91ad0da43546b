"""`python scripts/invoke.py` runs imgclf_launch.invoke (installed with `pip install -e scripts`; README)."""
try:
    from imgclf_launch.invoke import main
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {e}: pip install -r scripts/requirements-sdk2.txt (or -sdk3.txt) -e container -e scripts (README)")
if __name__ == "__main__":  # paramiko imports "invoke" if it can: with scripts/ on sys.path, this file
    raise SystemExit(main())
