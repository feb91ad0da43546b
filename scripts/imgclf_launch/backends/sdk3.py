"""The SageMaker Python SDK 3.x backend (3.27): the requests of ``api_requests`` sent with the session's
client, sagemaker-core resources to wait on them, ``sagemaker.core.local.LocalSession`` for --local."""

from __future__ import annotations

import json

from ..debugger import rule_config_function
from ..jobs import Debugger, Deployment, Target, TrainingJob, TrainingResult, Transform, Tuning, TuningResult
from ..names import image_base, short_timestamped, timestamped
from . import api_requests, config_defaults
from .base import Backend


def rule_configurations(debugger: Debugger | None, region: str) -> dict:
    """DebugRuleConfigurations and ProfilerRuleConfigurations, with the region's rule image."""
    if debugger is None:
        return {}
    from sagemaker.core.debugger import ProfilerRule, Rule, get_rule_container_image_uri, rule_configs

    builtin = [Rule.sagemaker(getattr(rule_configs, rule_config_function(name))()) for name, _ in debugger.builtin_rules]
    profiler = [ProfilerRule.sagemaker(getattr(rule_configs, name)()) for name in debugger.profiler_rules]
    for rule in builtin + profiler:
        rule.image_uri = get_rule_container_image_uri(rule.name, region)
    custom = [Rule.custom(name=r.name, image_uri=r.image, instance_type=r.instance_type,
                          volume_size_in_gb=r.volume_size_gb, source=r.source, rule_to_invoke=r.rule_to_invoke,
                          rule_parameters=dict(r.parameters))
              for r in debugger.custom_rules]
    return {"DebugRuleConfigurations": [r.to_debugger_rule_config_dict() for r in builtin + custom],
            "ProfilerRuleConfigurations": [r.to_profiler_rule_config_dict() for r in profiler]}


class Sdk(Backend):
    @staticmethod
    def load_sagemaker_config() -> dict:
        from sagemaker.core.config import load_sagemaker_config

        return load_sagemaker_config()

    @staticmethod
    def sdk_session(target: Target, boto, config: dict):
        """Local mode's LocalSession; none on SageMaker (sagemaker-core resources take the boto3 session)."""
        if not target.local:
            return None
        from sagemaker.core.local import LocalSession

        return LocalSession(boto_session=boto, sagemaker_config=config)

    def _create(self, resource: str, request: dict) -> None:
        """Create<resource> with the user's SDK config defaults, on boto3's client or local mode's."""
        from sagemaker.core.common_utils import instance_supports_kms
        from sagemaker.core.utils.utils import pascal_to_snake

        request = config_defaults.applied(f"Create{resource}", request, self.config, instance_supports_kms)
        getattr(self.sagemaker_client, f"create_{pascal_to_snake(resource)}")(**request)

    def train(self, job: TrainingJob, wait: bool) -> TrainingResult | None:
        request = api_requests.training_job(self.target, job, self.output_path(),
                                            rule_configurations(job.debugger, self.target.region))
        self._create("TrainingJob", request)
        if self.target.local:  # local mode's create runs the job to its end
            described = self.sagemaker_client.describe_training_job(TrainingJobName=job.name)
            return TrainingResult(job.name, described["ModelArtifacts"]["S3ModelArtifacts"])
        if not wait:
            return None
        from sagemaker.core.resources import TrainingJob

        resource = TrainingJob.get(job.name, session=self.boto, region=self.target.region)
        resource.wait(logs=True)
        statuses = tuple((s.rule_configuration_name, s.rule_evaluation_status)
                         for s in (resource.debug_rule_evaluation_statuses or []) if job.debugger)
        return TrainingResult(job.name, resource.model_artifacts.s3_model_artifacts, statuses)

    def tune(self, job: TrainingJob, tuning: Tuning, wait: bool) -> TuningResult | None:
        name = short_timestamped(image_base(self.target.image_uri))
        request = api_requests.tuning_job(self.target, job, tuning, name, self.output_path())
        self._create("HyperParameterTuningJob", request)
        if not wait:
            return None
        from sagemaker.core.resources import HyperParameterTuningJob

        resource = HyperParameterTuningJob.get(name, session=self.boto, region=self.target.region)
        resource.wait()
        best = resource.best_training_job.training_job_name
        return TuningResult(best, self.sagemaker_client.describe_training_job(TrainingJobName=best)["HyperParameters"])

    def deploy(self, deployment: Deployment, wait: bool) -> None:
        name = deployment.endpoint_name
        self._create("Model", api_requests.model(self.target, name, deployment.model_data, deployment.environment))
        self._create("EndpointConfig", api_requests.endpoint_config(self.target, deployment, name))
        self._create("Endpoint", {"EndpointName": name, "EndpointConfigName": name, "Tags": []})
        if wait and not self.target.local:
            from sagemaker.core.resources import Endpoint

            Endpoint.get(name, session=self.boto, region=self.target.region).wait_for_status("InService")

    def transform(self, spec: Transform, wait: bool) -> str:
        model_name = timestamped(image_base(self.target.image_uri))
        self._create("Model", api_requests.model(self.target, model_name, spec.model_data, spec.environment))
        name = timestamped(image_base(self.target.image_uri))
        self._create("TransformJob", api_requests.transform_job(self.target, spec, name, model_name))
        if wait and not self.target.local:
            from sagemaker.core.resources import TransformJob

            TransformJob.get(name, session=self.boto, region=self.target.region).wait()
        return spec.output_path

    def predict(self, endpoint_name: str, body: bytes, content_type: str, top_k: int) -> dict:
        """InvokeEndpoint with Accept application/json: sagemaker-core's Endpoint.invoke, or local mode's client."""
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

