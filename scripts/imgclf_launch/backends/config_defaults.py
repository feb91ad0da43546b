"""The user's SDK config defaults (``SageMaker.<Resource>``) applied to the 3.x backend's requests
where SDK 2.257 applies them (docs/launchers.md, "Your SDK config")."""

from __future__ import annotations

import copy
from collections.abc import Callable

CONFIG_KEYS = {"CreateTrainingJob": "TrainingJob", "CreateHyperParameterTuningJob": "TrainingJob", "CreateModel": "Model",
               "CreateEndpointConfig": "EndpointConfig", "CreateEndpoint": "Endpoint", "CreateTransformJob": "TransformJob"}
# The fields of a tuning job's HyperParameterTrainingJobDefinition that the user's TrainingJob defaults fill.
TRIAL_CONFIG_FIELDS = ("OutputDataConfig", "VpcConfig", "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption",
                       "Environment")
ONLY_WHERE_GIVEN = ("DataCaptureConfig", "AsyncInferenceConfig")
# 2.x merges these only into shapes our requests never have.
NEVER_FOR_OURS = {"CreateModel": "Containers", "CreateEndpointConfig": "ProductionVariants"}

SupportsKms = Callable[[str], bool]


def with_defaults(request: dict, defaults: dict) -> dict:
    """The config's values where the request has none (maps merged key by key, tags appended)."""
    merged = dict(request)
    for key, value in defaults.items():
        if key == "Tags":
            keys = {tag["Key"] for tag in request.get("Tags", [])}
            merged["Tags"] = list(request.get("Tags", [])) + [tag for tag in value if tag["Key"] not in keys]
        elif isinstance(value, dict) and isinstance(request.get(key), dict):
            merged[key] = with_defaults(request[key], value)
        elif key not in request:
            merged[key] = value
    return merged


def applied(operation: str, request: dict, config: dict, supports_kms: SupportsKms) -> dict:
    """``request`` with the user's defaults for its resource, as 2.x would send it."""
    defaults = copy.deepcopy(config.get("SageMaker", {}).get(CONFIG_KEYS[operation], {}))
    for key in ONLY_WHERE_GIVEN:
        if key not in request:
            defaults.pop(key, None)
    defaults.pop(NEVER_FOR_OURS.get(operation, ""), None)
    special = {"CreateTrainingJob": _training_job, "CreateHyperParameterTuningJob": _tuning_job,
               "CreateEndpointConfig": _endpoint_config}.get(operation)
    return special(request, defaults, supports_kms) if special else with_defaults(request, defaults)


def _training_job(request: dict, defaults: dict, supports_kms: SupportsKms) -> dict:
    if not supports_kms(request["ResourceConfig"]["InstanceType"]):
        defaults.get("ResourceConfig", {}).pop("VolumeKmsKeyId", None)
    return with_defaults(request, defaults)


def _tuning_job(request: dict, defaults: dict, supports_kms: SupportsKms) -> dict:
    definition = request["TrainingJobDefinition"]
    trial = {key: value for key, value in defaults.items() if key in TRIAL_CONFIG_FIELDS}
    volume_key = defaults.get("ResourceConfig", {}).get("VolumeKmsKeyId")
    if volume_key and supports_kms(definition["HyperParameterTuningResourceConfig"]["InstanceType"]):
        trial["HyperParameterTuningResourceConfig"] = {"VolumeKmsKeyId": volume_key}
    tags = {"Tags": defaults["Tags"]} if "Tags" in defaults else {}
    return with_defaults(request | {"TrainingJobDefinition": with_defaults(definition, trial)}, tags)


def _endpoint_config(request: dict, defaults: dict, supports_kms: SupportsKms) -> dict:
    variants = request["ProductionVariants"]
    if not any(supports_kms(v["InstanceType"]) for v in variants if "InstanceType" in v):
        defaults.pop("KmsKeyId", None)
    return with_defaults(request, defaults)
