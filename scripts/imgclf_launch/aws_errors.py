"""AWS, transport and job failures as one line for the user, and the boundary every launcher's
``main`` runs inside (``one_line_errors``): those end in ``error: ...``, exit status 1; a bug keeps its traceback."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from .flags import LaunchError

REFUSED = ("ValidationException", "AccessDeniedException")
HINTS = {
    "ResourceLimitExceeded": "an account quota for this instance type or job count is reached: "
                             "ask for a quota increase (Service Quotas) or pick another --instance-type",
    "ResourceInUse": "a job with this name exists already",
    "ResourceNotFound": "a resource the request names does not exist",
}
BOTOCORE_HINTS = {NoRegionError: "give --region or set AWS_REGION",
                  NoCredentialsError: "set up AWS credentials (aws configure, or AWS_PROFILE)"}


def explain(error: ClientError, with_debugger: bool = False) -> str:
    """One line for a ClientError."""
    code = error.response["Error"].get("Code", "")
    message = " ".join(str(error.response["Error"].get("Message", "")).split())
    if code in REFUSED and with_debugger:
        return (f"SageMaker refused the job ({code}: {message}). If that is the Debugger settings (Debugger is closed "
                "to new AWS customers since 2026-07-30), run again with --no-debugger: the in-container rules "
                "hyperparameter checks the same things")
    if code in HINTS:
        return f"{code}: {HINTS[code]} ({message})"
    return f"{code}: {message}"


def job_failures() -> tuple[type[Exception], ...]:
    """The installed SDK's exceptions for a job or resource that ended badly (failed, stopped, timed out)."""
    from .backends import sdk_major

    try:
        major = sdk_major()
    except LaunchError:  # no SDK (analyze_debug and prepare_data need none): no job of its to fail
        return ()
    if major == 2:
        from sagemaker.exceptions import UnexpectedStatusException

        return (UnexpectedStatusException,)
    from sagemaker.core.utils.exceptions import SageMakerCoreError

    return (SageMakerCoreError,)


def config_errors() -> tuple[type[Exception], ...]:
    """How both SDKs refuse a config file that breaks their schema (jsonschema's)."""
    try:
        from jsonschema.exceptions import ValidationError
    except ImportError:
        return ()
    return (ValidationError,)


def one_line(error: Exception) -> str | None:
    """The line for an error that is not a bug in the launcher; None for one that is."""
    if isinstance(error, ClientError):
        return explain(error)
    if isinstance(error, BotoCoreError):
        hint = next((f" ({text})" for kind, text in BOTOCORE_HINTS.items() if isinstance(error, kind)), "")
        return "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) + hint
    if isinstance(error, config_errors()):
        where = ".".join(str(part) for part in error.absolute_path)
        return f"your SageMaker SDK config file is invalid at {where}: {' '.join(error.message.split())}"
    if isinstance(error, job_failures()):
        return " ".join(str(error).split())
    return None


class TroubleshootingLines(logging.Filter):
    """2.x's "Please check the troubleshooting guide" log lines, held back unless a bug follows."""

    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "troubleshooting guide" in record.getMessage():
            self.held.append(record)
            return False
        return True

    def __enter__(self) -> TroubleshootingLines:
        logging.getLogger("sagemaker").addFilter(self)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        logging.getLogger("sagemaker").removeFilter(self)
        if isinstance(error, Exception):  # a bug: its traceback comes with everything the SDK logged
            for record in self.held:
                logging.getLogger(record.name).handle(record)


def one_line_errors(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """The launchers' error boundary around a launcher's ``main``."""
    @functools.wraps(main)
    def bounded(argv: list[str] | None = None) -> int:
        with TroubleshootingLines():
            try:
                return main(argv)
            except Exception as error:  # sorted by one_line; a bug is raised again
                line = one_line(error)
                if line is None:
                    raise
        raise LaunchError(line) from None
    return bounded
