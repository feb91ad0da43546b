"""Every SageMaker SDK call the launchers make, in one thin layer (sagemaker 2.x generic classes).

The launchers (tune.py, train_debug.py) parse flags and call these functions; moving to SDK 3.x
(ModelTrainer, ModelBuilder) means rewriting this file only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))  # imgclf.metrics needs no torch: the laptop need not have it

from imgclf.metrics import METRIC_DEFINITIONS, OBJECTIVE_METRIC, OBJECTIVE_TYPE  # noqa: E402


class LaunchError(SystemExit):
    """A missing or bad flag: printed as one line, exit code 2."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


def quiet_sdk() -> None:
    """Opt out of the SDK's telemetry and its v2 deprecation banner; call before importing sagemaker."""
    config = Path(tempfile.gettempdir()) / "imgclf-sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    os.environ.setdefault("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-uri", default=os.environ.get("IMGCLF_IMAGE_URI"),
                        help="the pushed image, ACCOUNT.dkr.ecr.REGION.amazonaws.com/imgclf:TAG (env IMGCLF_IMAGE_URI)")
    parser.add_argument("--role", default=os.environ.get("SAGEMAKER_ROLE"),
                        help="SageMaker execution role ARN (env SAGEMAKER_ROLE)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    parser.add_argument("--data", default=os.environ.get("IMGCLF_DATA"),
                        help="s3://BUCKET/PREFIX holding train/, valid/, test/ (or a local folder with --local)")
    parser.add_argument("--output-path", default=os.environ.get("IMGCLF_OUTPUT_PATH"),
                        help="s3://BUCKET/PREFIX for model artifacts (env IMGCLF_OUTPUT_PATH)")
    parser.add_argument("--instance-type", default="ml.g4dn.xlarge")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over every GPU of every instance (torchrun; hyperparameter "
                             "sagemaker_torch_distributed_enabled); on by itself for one multi-GPU instance")
    parser.add_argument("--spot", action="store_true", help="managed spot training (checkpoints resume the job)")
    parser.add_argument("--max-run", type=int, default=4 * 3600, help="seconds")
    parser.add_argument("--local", action="store_true", help="SDK local mode: run the image on this machine")
    parser.add_argument("--dry-run", action="store_true", help="print the API request instead of sending it")


@dataclass
class Target:
    image_uri: str
    role: str
    region: str
    data: str
    output_path: str | None
    instance_type: str
    instance_count: int
    distributed: bool
    spot: bool
    max_run: int
    local: bool
    dry_run: bool


def target_from(args: argparse.Namespace) -> Target:
    """Check the flags every launcher needs; one clear line for each missing one."""
    if args.local:
        args.instance_type = args.instance_type if args.instance_type.startswith("local") else "local"
        args.role = args.role or "arn:aws:iam::000000000000:role/local-mode"
        args.region = args.region or "us-east-1"
    missing = [flag for flag, value in (("--image-uri", args.image_uri), ("--role", args.role),
                                        ("--region", args.region), ("--data", args.data)) if not value]
    if missing:
        raise LaunchError(f"missing {', '.join(missing)} (flags, or env IMGCLF_IMAGE_URI, SAGEMAKER_ROLE, AWS_REGION, IMGCLF_DATA)")
    if not args.local and not args.dry_run and not (args.output_path or "").startswith("s3://"):
        raise LaunchError("--output-path s3://BUCKET/PREFIX is required for jobs on SageMaker")
    return Target(args.image_uri, args.role, args.region, args.data, args.output_path, args.instance_type,
                  args.instance_count, args.distributed, args.spot, args.max_run, args.local, args.dry_run)


@dataclass
class DryRun:
    """Captures the SageMaker API requests a session would send, and sends none of them."""

    requests: list[tuple[str, dict]] = field(default_factory=list)

    def attach(self, client) -> None:
        client.meta.events.register("before-parameter-build.sagemaker", self._record)
        client.meta.events.register("before-call.sagemaker", self._answer)

    def _record(self, params, model, **_) -> None:
        self.requests.append((model.name, json.loads(json.dumps(params, default=str))))

    def _answer(self, **_) -> tuple:
        """Returning a response from before-call makes botocore skip the HTTP request."""
        from botocore.awsrequest import AWSResponse

        arns = ("TrainingJobArn", "HyperParameterTuningJobArn", "ModelArn", "EndpointConfigArn", "EndpointArn")
        response = {key: "arn:aws:sagemaker:dry-run" for key in arns}
        return AWSResponse("https://dry-run", 200, {}, None), response


def session(target: Target, dry_run: DryRun | None = None):
    quiet_sdk()
    import boto3
    import sagemaker
    from sagemaker.local import LocalSession

    if target.local:
        local = LocalSession(boto_session=boto3.Session(region_name=target.region))
        local.config = {"local": {"local_code": True}}
        return local
    sess = sagemaker.Session(boto_session=boto3.Session(region_name=target.region))
    if dry_run is not None:
        dry_run.attach(sess.sagemaker_client)
    return sess


def channels(target: Target) -> dict[str, str]:
    """train/valid/test under --data: s3:// as given, a local folder as file://."""
    base = target.data.rstrip("/")
    if not base.startswith("s3://"):
        base = "file://" + str(Path(base).resolve())
    return {name: f"{base}/{name}" for name in ("train", "valid", "test")}


def estimator(target: Target, sess, hyperparameters: dict, **debug) -> object:
    """A generic Estimator for the image; Debugger only when ``debug`` gives its settings."""
    from sagemaker.estimator import Estimator

    spot = {"use_spot_instances": True, "max_wait": target.max_run * 2,
            "checkpoint_s3_uri": f"{target.output_path}/checkpoints"} if target.spot and target.output_path else {}
    return Estimator(
        image_uri=target.image_uri,
        role=target.role,
        instance_count=target.instance_count,
        instance_type=target.instance_type,
        output_path=target.output_path or (None if not target.local else f"file://{REPO / 'build' / 'local-mode'}"),
        hyperparameters={k: str(v) for k, v in hyperparameters.items()}
        | ({"sagemaker_torch_distributed_enabled": "true"} if target.distributed else {}),
        metric_definitions=METRIC_DEFINITIONS,
        max_run=target.max_run,
        sagemaker_session=sess,
        debugger_hook_config=debug.pop("debugger_hook_config", False),  # 2.257 adds one to every job otherwise
        disable_profiler=debug.pop("disable_profiler", True),
        **spot,
        **debug,
    )


def search_space() -> dict:
    """The reference project's ranges: lr 0.001-0.1 (log), batch size, epochs."""
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter, IntegerParameter

    return {
        "lr": ContinuousParameter(0.001, 0.1, scaling_type="Logarithmic"),
        "batch-size": CategoricalParameter([32, 64, 128, 256]),
        "epochs": IntegerParameter(2, 4),
    }


def tuner(estimator, max_jobs: int, max_parallel_jobs: int) -> object:
    from sagemaker.tuner import HyperparameterTuner

    return HyperparameterTuner(
        estimator, OBJECTIVE_METRIC, search_space(), METRIC_DEFINITIONS, objective_type=OBJECTIVE_TYPE,
        max_jobs=max_jobs, max_parallel_jobs=max_parallel_jobs,
    )


def print_requests(dry_run: DryRun) -> None:
    for operation, params in dry_run.requests:
        print(f"--- {operation} (not sent)")
        print(json.dumps(params, indent=1, default=str))


def model_data_of(sess, source: str) -> str:
    """An s3:// or file:// model.tar.gz as given, or the artifacts of a training job by name."""
    if source.startswith(("s3://", "file://")):
        return source
    job = sess.sagemaker_client.describe_training_job(TrainingJobName=source)
    return job["ModelArtifacts"]["S3ModelArtifacts"]


def upload_file(target: Target, path: Path, s3_uri: str) -> None:
    import boto3

    bucket, _, key = s3_uri.removeprefix("s3://").partition("/")
    boto3.client("s3", region_name=target.region).upload_file(str(path), bucket, key)


def debug_job(region: str, job_name: str) -> tuple[str, list[dict]]:
    """A Debugger job's tensor location and its rule evaluations (DescribeTrainingJob)."""
    quiet_sdk()
    import boto3

    job = boto3.client("sagemaker", region_name=region).describe_training_job(TrainingJobName=job_name)
    hook = job.get("DebugHookConfig")
    if not hook:
        raise LaunchError(f"training job {job_name} ran without a DebuggerHookConfig: it saved no tensors")
    path = f"{hook['S3OutputPath'].rstrip('/')}/{job_name}/debug-output"
    return path, job.get("DebugRuleEvaluationStatuses", [])


def deploy(target: Target, sess, model_data: str, endpoint_name: str, instance_type: str, wait: bool) -> None:
    from sagemaker.model import Model

    model = Model(image_uri=target.image_uri, model_data=model_data, role=target.role, sagemaker_session=sess,
                  name=endpoint_name)
    model.deploy(initial_instance_count=target.instance_count, instance_type=instance_type,
                 endpoint_name=endpoint_name, wait=wait)


def autoscale(target: Target, endpoint_name: str, max_instances: int, invocations_per_instance: int) -> None:
    """Target tracking on SageMakerVariantInvocationsPerInstance for the endpoint's AllTraffic variant."""
    import boto3

    client = boto3.client("application-autoscaling", region_name=target.region)
    resource = f"endpoint/{endpoint_name}/variant/AllTraffic"
    client.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource,
                                    ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                                    MinCapacity=target.instance_count, MaxCapacity=max_instances)
    client.put_scaling_policy(
        PolicyName=f"{endpoint_name}-invocations", ServiceNamespace="sagemaker", ResourceId=resource,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(invocations_per_instance),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        },
    )


def delete_endpoint(sess, endpoint_name: str) -> None:
    config = sess.sagemaker_client.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]
    models = [v["ModelName"] for v in sess.sagemaker_client.describe_endpoint_config(
        EndpointConfigName=config)["ProductionVariants"]]
    sess.delete_endpoint(endpoint_name)
    sess.delete_endpoint_config(config)
    for name in models:
        sess.delete_model(name)


def predict(sess, endpoint_name: str, body: bytes, content_type: str, top_k: int) -> dict:
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer

    predictor = Predictor(endpoint_name, sagemaker_session=sess, serializer=IdentitySerializer(content_type),
                          deserializer=JSONDeserializer())
    return predictor.predict(body, initial_args={"CustomAttributes": f"top_k={top_k}"})
