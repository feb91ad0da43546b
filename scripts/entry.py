"""Runs a launcher's ``main`` for ``python scripts/NAME.py``, or says in one line what to install."""

from importlib import import_module


def run(name: str) -> None:
    try:
        main = import_module(f"imgclf_launch.{name}").main
    except ModuleNotFoundError as e:
        raise SystemExit(f"error: {e}: pip install -r scripts/requirements-sdk2.txt (or -sdk3.txt) -e container "
                         "-e scripts (README)")
    raise SystemExit(main())
