"""`python scripts/prepare_data.py` runs imgclf_launch.prepare_data (installed with `pip install -e scripts`; README)."""
try:
    from imgclf_launch.prepare_data import main
except ModuleNotFoundError as e:
    raise SystemExit(f"error: {e}: pip install -r scripts/requirements-sdk2.txt (or -sdk3.txt) -e container -e scripts (README)")
if __name__ == "__main__":
    raise SystemExit(main())
