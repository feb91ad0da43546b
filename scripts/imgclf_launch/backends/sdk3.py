"""The SageMaker Python SDK 3.x backend (3.27): sagemaker-core resources (TrainingJob,
HyperParameterTuningJob, Model, EndpointConfig, Endpoint, TransformJob) with the requests of
``api_requests``; ``sagemaker.core.local.LocalSession`` (2.x's docker-compose local mode, kept in
3.x) for --local.

Not ModelTrainer: it has no Debugger fields, and its Mode.LOCAL_CONTAINER starts the image without
the ``train`` argument (README, "SDK 3.x"). Debugger's built-in rule images and default rule
parameters come from sagemaker.core.debugger, as 2.x's Estimator fills them in; the user's SDK config
defaults are applied where 2.x applies them (``config_defaults``).
"""

from __future__ import annotations

import inspect
import json
import typing

from ..debugger import rule_config_function
from ..flags import LaunchError
from ..jobs import Debugger, Deployment, Target, TrainingJob, TrainingResult, Transform, Tuning, TuningResult
from ..names import image_base, short_timestamped, timestamped
from ..paths import REPO
from . import api_requests, config_defaults
from .base import Backend, check_config_overrides, with_telemetry_off


def sdk_config(dry_run: bool) -> dict:
    """The SDK defaults the user set up (admin and user config files: VPC, KMS keys, tags) with the
    telemetry opt-out merged in."""
    from sagemaker.core.config import load_sagemaker_config

    check_config_overrides(dry_run)
    return with_telemetry_off(load_sagemaker_config())


def rule_configurations(debugger: Debugger | None, region: str) -> dict:
    """DebugRuleConfigurations and ProfilerRuleConfigurations, with the region's rule image."""
    if debugger is None:
        return {}
    from sagemaker.core.debugger import ProfilerRule, Rule, get_rule_container_image_uri, rule_configs

    builtin = [Rule.sagemaker(getattr(rule_configs, rule_config_function(name))()) for name, _ in debugger.builtin_rules]
    for rule in builtin:
        rule.image_uri = get_rule_container_image_uri(rule.name, region)
    custom = [Rule.custom(name=r.name, image_uri=r.image, instance_type=r.instance_type, volume_size_in_gb=r.volume_size_gb,
                          source=r.source, rule_to_invoke=r.rule_to_invoke, rule_parameters=dict(r.parameters))
              for r in debugger.custom_rules]
    profiler = [ProfilerRule.sagemaker(getattr(rule_configs, name)()) for name in debugger.profiler_rules]
    for rule in profiler:
        rule.image_uri = get_rule_container_image_uri(rule.name, region)
    return {"DebugRuleConfigurations": [r.to_debugger_rule_config_dict() for r in builtin + custom],
            "ProfilerRuleConfigurations": [r.to_profiler_rule_config_dict() for r in profiler]}


def shaped(annotation, value):
    """An API-shaped JSON value as the sagemaker-core type ``annotation`` (a shape, a list of them,
    or a plain value) takes it; field names map back the way sagemaker-core serializes them (ignoring
    case: MaxPayloadInMB is the field max_payload_in_mb)."""
    from pydantic import BaseModel
    from sagemaker.core.utils.utils import snake_to_pascal

    if typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if isinstance(value, list) and typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return [shaped(item, v) for v in value]
    if isinstance(value, dict) and inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        fields = {snake_to_pascal(name).lower(): (name, field.annotation) for name, field in annotation.model_fields.items()}
        unknown = [key for key in value if key.lower() not in fields]
        if unknown:
            raise LaunchError(f"{annotation.__name__} has no field {', '.join(unknown)} (from your SDK config?)")
        return annotation(**{fields[key.lower()][0]: shaped(fields[key.lower()][1], v) for key, v in value.items()})
    return value


def create(resource, request: dict, boto, region: str):
    """resource.create(...) with the request's fields as its typed arguments."""
    from sagemaker.core.utils.utils import snake_to_pascal

    parameters = {snake_to_pascal(name).lower(): (name, p.annotation)
                  for name, p in inspect.signature(resource.create).parameters.items()}
    unknown = [key for key in request if key.lower() not in parameters]
    if unknown:
        raise LaunchError(f"{resource.__name__}.create takes no {', '.join(unknown)} (from your SDK config?)")
    arguments = {parameters[key.lower()][0]: shaped(parameters[key.lower()][1], value) for key, value in request.items()}
    return resource.create(**arguments, session=boto, region=region)


class Sdk(Backend):
    major = 3

    sdk_config = staticmethod(sdk_config)

    @staticmethod
    def sdk_session(target: Target, boto, config: dict):
        """Local mode's LocalSession; none on SageMaker (sagemaker-core resources take the boto3 session)."""
        if not target.local:
            return None
        from sagemaker.core.local import LocalSession

        return LocalSession(boto_session=boto, sagemaker_config=config)

    def _request(self, operation: str, request: dict) -> dict:
        from sagemaker.core.common_utils import instance_supports_kms

        return config_defaults.applied(operation, request, self.config, instance_supports_kms)

    def _send(self, resource_name: str, request: dict, plain: bool = False):
        """Create a resource: through local mode's client, boto3's (``plain``), or sagemaker-core's
        resource class."""
        request = self._request(f"Create{resource_name}", request)
        if self.target.local or plain:
            getattr(self.sagemaker_client, f"create_{_snake(resource_name)}")(**request)
            return None
        from sagemaker.core import resources

        return create(getattr(resources, resource_name), request, self.boto, self.target.region)

    def _output_path(self) -> str:
        return self.target.output_path or f"file://{REPO / 'build' / 'local-mode'}"

    def train(self, job: TrainingJob, wait: bool) -> TrainingResult | None:
        request = api_requests.training_job(self.target, job, self._output_path(),
                                            rule_configurations(job.debugger, self.target.region))
        resource = self._send("TrainingJob", request)
        if self.target.local:  # local mode's create runs the job to its end
            described = self.sagemaker_client.describe_training_job(TrainingJobName=job.name)
            return TrainingResult(job.name, described["ModelArtifacts"]["S3ModelArtifacts"])
        if not wait:
            return None
        resource.wait(logs=True)
        statuses = tuple((s.rule_configuration_name, s.rule_evaluation_status)
                         for s in (resource.debug_rule_evaluation_statuses or []) if job.debugger)
        return TrainingResult(job.name, resource.model_artifacts.s3_model_artifacts, statuses)

    def tune(self, job: TrainingJob, tuning: Tuning, wait: bool) -> TuningResult | None:
        name = short_timestamped(image_base(self.target.image_uri))
        resource = self._send("HyperParameterTuningJob",
                              api_requests.tuning_job(self.target, job, tuning, name, self._output_path()))
        if not wait:
            return None
        resource.wait()
        best = resource.best_training_job.training_job_name
        return TuningResult(best, self.sagemaker_client.describe_training_job(TrainingJobName=best)["HyperParameters"])

    def deploy(self, deployment: Deployment, wait: bool) -> None:
        name = deployment.endpoint_name
        self._send("Model", api_requests.model(self.target, name, deployment.model_data, deployment.environment))
        # boto3's client: sagemaker-core 2.27 sends ServerlessConfig's memory_size_in_mb as "MemorySizeInMb",
        # which botocore refuses (the field is MemorySizeInMB; its snake_to_pascal maps only VolumeSizeInGB).
        self._send("EndpointConfig", api_requests.endpoint_config(self.target, deployment, name), plain=True)
        endpoint = self._send("Endpoint", {"EndpointName": name, "EndpointConfigName": name, "Tags": []})
        if wait and endpoint is not None:
            endpoint.wait_for_status("InService")

    def transform(self, spec: Transform, wait: bool) -> str:
        model_name = timestamped(image_base(self.target.image_uri))
        self._send("Model", api_requests.model(self.target, model_name, spec.model_data, spec.environment))
        request = api_requests.transform_job(self.target, spec, timestamped(image_base(self.target.image_uri)), model_name)
        job = self._send("TransformJob", request)
        if wait and job is not None:
            job.wait()
        return spec.output_path

    def predict(self, endpoint_name: str, body: bytes, content_type: str, top_k: int) -> dict:
        """InvokeEndpoint with Accept application/json: sagemaker-core's Endpoint.invoke on the endpoint
        by name (no DescribeEndpoint first: invoking needs only sagemaker:InvokeEndpoint), or local
        mode's runtime client."""
        if self.target.local:
            answer = self.session.sagemaker_runtime_client.invoke_endpoint(
                EndpointName=endpoint_name, Body=body, ContentType=content_type, Accept="application/json",
                CustomAttributes=f"top_k={top_k}")
            return json.loads(answer["Body"].read())
        from sagemaker.core.resources import Endpoint

        answer = Endpoint(endpoint_name=endpoint_name).invoke(
            body=body, content_type=content_type, accept="application/json", custom_attributes=f"top_k={top_k}",
            session=self.boto, region=self.target.region)
        return json.loads(answer.body.read())


def _snake(name: str) -> str:
    from sagemaker.core.utils.utils import pascal_to_snake

    return pascal_to_snake(name)
