"""The backend for the installed SageMaker Python SDK: 2.x (``sdk2``) or 3.x (``sdk3``), never both."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ..flags import LaunchError
from ..jobs import Target
from .base import Backend

INSTALL = "pip install -r scripts/requirements-sdk3.txt -e container -e scripts (or requirements-sdk2.txt for SDK 2.x)"


def sdk_major() -> int:
    try:
        return int(version("sagemaker").split(".")[0])
    except PackageNotFoundError:
        raise LaunchError(f"the SageMaker Python SDK is not installed: {INSTALL}") from None


def module():
    """backends.sdk2 or backends.sdk3, for the installed SDK."""
    major = sdk_major()
    if major == 2:
        from . import sdk2 as chosen
    elif major == 3:
        from . import sdk3 as chosen
    else:
        raise LaunchError(f"sagemaker {version('sagemaker')} is installed; the launchers need 2.257 or 3.x: {INSTALL}")
    return chosen


def connect(target: Target) -> Backend:
    """The installed SDK's backend over one boto3 session (a dry run's when ``target.dry_run``)."""
    return module().Sdk(target)
