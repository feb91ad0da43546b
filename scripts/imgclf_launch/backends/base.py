"""What both SDK backends do the same way: one boto3 session (where a dry run attaches), the user's
SDK config, and the calls that need no SDK class (the session's client, or local mode's)."""

from __future__ import annotations

import os
from pathlib import Path

from ..dryrun import DryRun
from ..flags import LaunchError
from ..jobs import Target
from ..paths import REPO

TENSORBOARD_LOCAL_PATH = "/opt/ml/output/tensorboard"  # SageMaker's default TensorBoardOutputConfig.LocalPath


def boto_session(target: Target, dry_run: DryRun | None):
    """One boto3 session for every client, a dry run's attached before any client exists; --region also
    for the clients the SDK makes from a default Session (docs/launchers.md, "Region")."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # the 2.x deprecation banner
    if target.region:
        os.environ["AWS_DEFAULT_REGION"] = target.region
    if dry_run is not None:
        return dry_run.session(target.region)
    import boto3

    return boto3.Session(region_name=target.region)


class Backend:
    """Operations that are plain API calls on either SDK, over one boto3 session."""

    def __init__(self, target: Target):
        self.target = target
        self.dry_run = DryRun() if target.dry_run else None
        self.boto = boto_session(target, self.dry_run)
        self.config = self.sdk_config()
        self.session = self.sdk_session(target, self.boto, self.config)
        if target.local:
            self.session.config = {"local": {"local_code": True}}
        self.sagemaker_client = self.session.sagemaker_client if self.session else self.boto.client("sagemaker")

    @classmethod
    def sdk_config(cls) -> dict:
        """The user's SDK config files (VPC, KMS keys, tags) with the telemetry opt-out merged in."""
        config = cls.load_sagemaker_config()
        config.setdefault("SchemaVersion", "1.0")
        modules = config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})
        modules["TelemetryOptOut"] = True
        return config

    def output_path(self) -> str:
        """Where jobs write: --output-path, or a folder of this checkout in local mode."""
        return self.target.output_path or f"file://{REPO / 'build' / 'local-mode'}"

    def model_data_of(self, source: str) -> str:
        """An s3:// or file:// model.tar.gz as given, or the artifacts of a training job by name."""
        if source.startswith(("s3://", "file://")):
            return source
        job = self.sagemaker_client.describe_training_job(TrainingJobName=source)
        if "ModelArtifacts" not in job:
            raise LaunchError(f"training job {source} has no model artifacts (status {job.get('TrainingJobStatus')})")
        return job["ModelArtifacts"]["S3ModelArtifacts"]

    def upload_file(self, path: Path, s3_uri: str) -> None:
        bucket, _, key = s3_uri.removeprefix("s3://").partition("/")
        self.boto.client("s3").upload_file(str(path), bucket, key)

    def autoscale(self, endpoint_name: str, min_instances: int, max_instances: int, invocations_per_instance: int) -> None:
        """Target tracking on SageMakerVariantInvocationsPerInstance for the endpoint's AllTraffic variant."""
        client = self.boto.client("application-autoscaling")
        resource = f"endpoint/{endpoint_name}/variant/AllTraffic"
        client.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource,
                                        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                                        MinCapacity=min_instances, MaxCapacity=max_instances)
        client.put_scaling_policy(
            PolicyName=f"{endpoint_name}-invocations", ServiceNamespace="sagemaker", ResourceId=resource,
            ScalableDimension="sagemaker:variant:DesiredInstanceCount", PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": float(invocations_per_instance),
                "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            },
        )

    def delete_endpoint(self, endpoint_name: str) -> None:
        """The endpoint, its config and the config's models."""
        client = self.sagemaker_client
        config = client.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]
        models = [v["ModelName"] for v in client.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]]
        client.delete_endpoint(EndpointName=endpoint_name)
        client.delete_endpoint_config(EndpointConfigName=config)
        for name in models:
            client.delete_model(ModelName=name)
