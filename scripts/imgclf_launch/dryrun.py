"""Dry runs: every AWS request made through one boto3 session is recorded and answered, none sent;
placeholders stand where the values a launcher reads back would be."""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "dry-run", "AWS_SECRET_ACCESS_KEY": "dry-run"}


class DryRunLeak(RuntimeError):
    """A request got past the dry run's answer and was about to be sent."""


def printable(value):
    """Request parameters as JSON: request bodies shown by their size, not their bytes."""
    if isinstance(value, dict):
        return {k: printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, io.IOBase):
        return "<stream>"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def placeholders(noun: str, name: str) -> dict:
    """The fields a launcher reads from a resource it did not create in this run."""
    return {
        "TrainingJob": {"ModelArtifacts": {"S3ModelArtifacts": f"<S3ModelArtifacts of {name}>"}},
        "Endpoint": {"EndpointConfigName": f"<EndpointConfigName of {name}>"},
        "EndpointConfig": {"ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": f"<ModelName in {name}>"}]},
    }.get(noun, {})


def arn(noun: str, name: str) -> str:
    kebab = re.sub(r"(?<!^)(?=[A-Z])", "-", noun).lower()
    return f"arn:aws:sagemaker:us-east-1:000000000000:{kebab}/{name.lower()}"


def answer_for(operation: str, params: dict) -> dict:
    """The reply to one request."""
    if operation == "InvokeEndpoint":
        from botocore.response import StreamingBody

        body = b'{"predictions": [[]]}'
        return {"ContentType": "application/json", "Body": StreamingBody(io.BytesIO(body), len(body))}
    if operation.startswith("Describe"):
        noun = operation.removeprefix("Describe")
        return placeholders(noun, params.get(f"{noun}Name", ""))
    if operation.startswith("Create"):
        noun = operation.removeprefix("Create")
        return {f"{noun}Arn": arn(noun, params.get(f"{noun}Name", "dry-run"))}
    return {"PolicyARN": "arn:aws:autoscaling:dry-run", "ScalableTargetARN": "arn:aws:application-autoscaling:dry-run"}


@dataclass
class DryRun:
    """Records and answers every request made through a boto3 session (before-call); before-send refuses."""

    requests: list[tuple[str, str, dict]] = field(default_factory=list)

    def session(self, region: str):
        """A boto3 session with the dry run attached; dummy credentials and no profile or IMDS, for the
        SDK's own sessions too (docs/launchers.md, "Dry runs")."""
        import boto3

        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            os.environ.pop(name, None)
        os.environ.update(DUMMY_CREDENTIALS | {"AWS_EC2_METADATA_DISABLED": "true"})
        session = boto3.Session(region_name=region, aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        self.attach(session)
        return session

    def attach(self, boto_session) -> None:
        """Register on the session itself: every client made from it afterwards inherits the hooks."""
        boto_session.events.register("before-parameter-build", self._record)
        boto_session.events.register("before-call", self._answer)
        boto_session.events.register("before-send", self._refuse)

    def _record(self, params, model, **_) -> None:
        self.requests.append((model.service_model.service_name, model.name, printable(params)))

    def _answer(self, model, params, **_) -> tuple:
        from botocore.awsrequest import AWSResponse

        response = answer_for(model.name, self.requests[-1][2] if self.requests else {})
        response["ResponseMetadata"] = {"HTTPStatusCode": 200}
        return AWSResponse("https://dry-run.invalid", 200, {}, None), response

    def _refuse(self, event_name: str = "", **_) -> None:
        raise DryRunLeak(f"dry run: {event_name} was about to send a request; refused")

    def print(self) -> None:
        for service, operation, params in self.requests:
            print(f"--- {service} {operation} (not sent)\n{json.dumps(params, indent=1)}")
