"""What both SDK backends do the same way: the boto3 session (where a dry run attaches) and the
calls that need no SDK class, made with plain client calls (the session's, or local mode's)."""

from __future__ import annotations

import os
from pathlib import Path

from ..dryrun import DryRun
from ..flags import LaunchError
from ..jobs import Target

TENSORBOARD_LOCAL_PATH = "/opt/ml/output/tensorboard"  # SageMaker's default TensorBoardOutputConfig.LocalPath


def boto_session(target: Target, dry_run: DryRun | None):
    """One boto3 session for every client; a dry run's has static dummy credentials and is attached
    before any client exists. Called before the SDK is imported."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # the 2.x deprecation banner
    # Two clients come from a default boto3 Session() the SDK makes itself, not from ours: sagemaker-core
    # 3.27's CloudWatch Logs client for TrainingJob.wait(logs=True) (sagemaker/core/utils/logs.py
    # CloudWatchLogsClient: session.region_name), and the S3 client load_sagemaker_config reads a
    # config file in S3 with (both SDKs' config/config.py). They read the region from the environment,
    # so they get --region from here (botocore reads AWS_DEFAULT_REGION only); credentials come from
    # the same default chain as our session's.
    if target.region:
        os.environ["AWS_DEFAULT_REGION"] = target.region
    if dry_run is not None:
        return dry_run.session(target.region)
    import boto3

    return boto3.Session(region_name=target.region)


def check_config_overrides(dry_run: bool) -> None:
    """The SDK reads its config files (SAGEMAKER_ADMIN_CONFIG_OVERRIDE, SAGEMAKER_USER_CONFIG_OVERRIDE)
    from S3 when they name an s3:// location: a request a dry run must not send."""
    overrides = [os.environ.get(name, "") for name in ("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", "SAGEMAKER_USER_CONFIG_OVERRIDE")]
    if dry_run and any(path.startswith("s3://") for path in overrides):
        raise LaunchError("dry run: your SageMaker SDK config is in S3 and reading it would send a request")


def with_telemetry_off(config: dict) -> dict:
    config.setdefault("SchemaVersion", "1.0")
    modules = config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})
    modules["TelemetryOptOut"] = True
    return config


class Backend:
    """Operations that are plain API calls on either SDK. ``sagemaker_client`` is boto3's, or local
    mode's stand-in for it."""

    major = 0

    def __init__(self, target: Target, boto, sagemaker_client):
        self.target, self.boto, self.sagemaker_client = target, boto, sagemaker_client
        self.session, self.config = None, {}

    @classmethod
    def connect(cls, target: Target, dry_run: DryRun | None = None) -> Backend:
        """The backend over one boto3 session (a dry run attached before any client exists), with the
        user's SDK config and the SDK's session (``sdk_session``; local mode's under --local)."""
        boto = boto_session(target, dry_run)
        config = cls.sdk_config(dry_run is not None)
        session = cls.sdk_session(target, boto, config)
        if target.local:
            session.config = {"local": {"local_code": True}}
        backend = cls(target, boto, session.sagemaker_client if session else boto.client("sagemaker"))
        backend.session, backend.config = session, config
        return backend

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
