"""The hyperparameters the launchers send (only what differs from the container's defaults), checked
on the laptop with the container's own parser."""

from __future__ import annotations

from collections.abc import Mapping

from imgclf.hyperparameters import ConfigError, parse_hyperparameters

from .flags import LaunchError
from .jobs import SearchSpace

# The reference project's ranges: lr 0.001-0.1 (log), batch size, epochs.
SEARCH_SPACE = SearchSpace(
    continuous={"lr": (0.001, 0.1, "Logarithmic")},
    integer={"epochs": (2, 4)},
    categorical={"batch-size": ("32", "64", "128", "256")},
)


def checked(hyperparameters: Mapping[str, object]) -> dict[str, str]:
    """Every value as the string SageMaker passes on; one line for what the container would refuse."""
    strings = {name: str(value) for name, value in hyperparameters.items()}
    try:
        parse_hyperparameters([item for name, value in strings.items() for item in (f"--{name}", value)])
    except ConfigError as e:
        raise LaunchError(str(e)) from None
    return strings


def with_defaults(defaults: Mapping[str, object], given: Mapping[str, object]) -> dict[str, object]:
    """``given`` over ``defaults``, names compared as the container compares them (batch_size is batch-size)."""
    def same(name: str) -> str:
        return name.replace("_", "-")

    overridden = {same(name) for name in given}
    return {name: value for name, value in defaults.items() if same(name) not in overridden} | dict(given)


def search_space_values(space: SearchSpace) -> list[dict[str, str]]:
    """One hyperparameter set per range end and per categorical value: what a tuner may send."""
    ends = [{name: str(low)} for name, (low, _, _) in space.continuous.items()]
    ends += [{name: str(high)} for name, (_, high, _) in space.continuous.items()]
    ends += [{name: str(value)} for name, (low, high) in space.integer.items() for value in (low, high)]
    ends += [{name: value} for name, values in space.categorical.items() for value in values]
    return ends


def check_search_space(space: SearchSpace) -> None:
    for values in search_space_values(space):
        checked(values)
