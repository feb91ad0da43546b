"""What a dry run answers, so that the calls after a read are shown with placeholders where the
real values would be. A Describe answers with the Create request of the same resource read back
(sagemaker-core, SDK 3.x, reads every resource back after create() into its typed model)."""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone

RESOURCES = ("TrainingJob", "HyperParameterTuningJob", "Model", "EndpointConfig", "Endpoint", "TransformJob")
DONE = datetime(2026, 1, 1, tzinfo=timezone.utc)
STATUS = {
    "TrainingJob": {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed"},
    "HyperParameterTuningJob": {"HyperParameterTuningJobStatus": "Completed"},
    "Endpoint": {"EndpointStatus": "InService"},
    "TransformJob": {"TransformJobStatus": "Completed"},
}


def placeholders(noun: str, name: str) -> dict:
    """The fields a launcher reads from a resource it did not create in this run."""
    return {
        "TrainingJob": {"ModelArtifacts": {"S3ModelArtifacts": f"<S3ModelArtifacts of {name}>"}},
        "Endpoint": {"EndpointConfigName": f"<EndpointConfigName of {name}>"},
        "EndpointConfig": {"ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": f"<ModelName in {name}>"}]},
    }.get(noun, {})


def describe(noun: str, name: str, created: dict | None) -> dict:
    return (placeholders(noun, name) | (created or {}) | {f"{noun}Name": name, f"{noun}Arn": arn(noun, name),
                                                          "CreationTime": DONE, "LastModifiedTime": DONE}
            | STATUS.get(noun, {}))


def arn(noun: str, name: str) -> str:
    kebab = re.sub(r"(?<!^)(?=[A-Z])", "-", noun).lower()
    return f"arn:aws:sagemaker:us-east-1:000000000000:{kebab}/{name.lower()}"


def answer_for(operation: str, params: dict, earlier: list[tuple[str, str, dict]]) -> dict:
    """The reply to one request, given the requests recorded before it."""
    if operation == "InvokeEndpoint":
        from botocore.response import StreamingBody

        body = b'{"predictions": [[]]}'
        return {"ContentType": "application/json", "Body": StreamingBody(io.BytesIO(body), len(body))}
    noun = operation.removeprefix("Describe")
    if operation.startswith("Describe") and noun in RESOURCES:
        name = params.get(f"{noun}Name", "")
        created = [p for _, op, p in earlier if op == f"Create{noun}" and p.get(f"{noun}Name") == name]
        return describe(noun, name, created[-1] if created else None)
    noun = operation.removeprefix("Create")
    if noun in RESOURCES:
        return {f"{noun}Arn": arn(noun, params.get(f"{noun}Name", "dry-run"))}
    return {"PolicyARN": "arn:aws:autoscaling:dry-run", "ScalableTargetARN": "arn:aws:application-autoscaling:dry-run"}
