"""What a dry run answers: placeholders where the values a launcher reads back would be."""

from __future__ import annotations

import io
import re


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
