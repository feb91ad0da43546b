"""AWS errors told apart by their code (botocore ``ClientError.response["Error"]["Code"]``), each
turned into one line for the user.

The codes: botocore's SageMaker service model lists CreateTrainingJob's own errors as
ResourceInUse, ResourceLimitExceeded and ResourceNotFound; ValidationException and
AccessDeniedException are the common errors every AWS API may return (AWS API reference, "Common
Errors"). A refused Debugger setting (Debugger is closed to new customers since 2026-07-30) comes
back as one of those two; AWS documents no code of its own for it.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

REFUSED = ("ValidationException", "AccessDeniedException")
HINTS = {
    "ResourceLimitExceeded": "an account quota for this instance type or job count is reached: "
                             "ask for a quota increase (Service Quotas) or pick another --instance-type",
    "ResourceInUse": "a job with this name exists already",
    "ResourceNotFound": "a resource the request names does not exist",
}


def explain(error: ClientError, with_debugger: bool) -> str:
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
