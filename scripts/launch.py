"""Every SageMaker SDK and AWS call the launchers make, in one thin layer (sagemaker 2.x generic classes).

The launchers (tune.py, train_debug.py, deploy.py, transform.py, invoke.py) parse flags and call these
functions; moving to SDK 3.x (ModelTrainer, ModelBuilder, sagemaker-core resources) means rewriting
this file only. Every AWS client comes from the one boto3 session made in ``session()``, which is
where a dry run captures requests.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))  # imgclf.metrics needs no torch: the laptop need not have it

from imgclf.metrics import METRIC_DEFINITIONS, OBJECTIVE_METRIC, OBJECTIVE_TYPE  # noqa: E402

# Instance families with NVIDIA GPUs: ml.g4dn, g5, g6, g6e, p3, p4d, p5, ... (CPU, Inferentia and
# Trainium families start with other letters).
GPU_INSTANCE = re.compile(r"^ml\.[gp]\d")
# ProductionVariant.InferenceAmiVersion (botocore 1.43 service model, enum
# ProductionVariantInferenceAmiVersion): the -4-1 AMI has driver 580 / CUDA 13.0, which runs the
# image's CUDA 13.0 torch natively; -3-1 (550) and -2-1 (535) need the forward-compatibility
# libraries the image enables itself. Without any, g4dn/g5/p3/p4d endpoints get driver 470.
INFERENCE_AMI_VERSIONS = ("al2023-ami-sagemaker-inference-gpu-4-1", "al2-ami-sagemaker-inference-gpu-3-1",
                          "al2-ami-sagemaker-inference-gpu-2-1", "al2-ami-sagemaker-inference-gpu-2")
# TransformResources.TransformAmiVersion: al2-ami-sagemaker-batch-gpu-470 (the default) or -535; only
# R535 and later run CUDA 13 (through the forward-compatibility libraries).
TRANSFORM_AMI_VERSION = "al2-ami-sagemaker-batch-gpu-535"
TENSORBOARD_LOCAL_PATH = "/opt/ml/output/tensorboard"  # SageMaker's default TensorBoardOutputConfig.LocalPath


class LaunchError(SystemExit):
    """A missing or bad flag, or a failed call: printed as one line, exit status 1."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


def quiet_sdk() -> None:
    """Silence the SDK's v2 deprecation banner; call before importing sagemaker."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")


def sdk_config(dry_run: bool) -> dict:
    """The SDK defaults the user set up (the admin and user config files, or the files their
    SAGEMAKER_ADMIN_CONFIG_OVERRIDE / SAGEMAKER_USER_CONFIG_OVERRIDE name: VPC, KMS keys, tags) with
    the telemetry opt-out merged in; the sessions take it as ``sagemaker_config``."""
    from sagemaker.config import load_sagemaker_config

    overrides = [os.environ.get(name, "") for name in ("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", "SAGEMAKER_USER_CONFIG_OVERRIDE")]
    if dry_run and any(path.startswith("s3://") for path in overrides):
        raise LaunchError("dry run: your SageMaker SDK config is in S3 and reading it would send a request")
    config = load_sagemaker_config()
    config.setdefault("SchemaVersion", "1.0")
    modules = config.setdefault("SageMaker", {}).setdefault("PythonSDK", {}).setdefault("Modules", {})
    modules["TelemetryOptOut"] = True
    return config


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
    parser.add_argument("--dry-run", action="store_true", help="print every API request instead of sending it")


@dataclass
class Target:
    region: str
    image_uri: str = ""
    role: str = ""
    data: str = ""
    output_path: str | None = None
    instance_type: str = "local"
    instance_count: int = 1
    distributed: bool = False
    spot: bool = False
    max_run: int = 0
    local: bool = False
    dry_run: bool = False


def target_from(args: argparse.Namespace) -> Target:
    """Check the flags every launcher needs; one clear line for each missing one."""
    if args.local and args.dry_run:
        raise LaunchError("--dry-run shows SageMaker API requests; --local sends none (drop one of them)")
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
    return Target(args.region, args.image_uri, args.role, args.data, (args.output_path or "").rstrip("/") or None,
                  args.instance_type, args.instance_count, args.distributed, args.spot, args.max_run, args.local,
                  args.dry_run)


class DryRunLeak(RuntimeError):
    """A request got past the dry run's answer and was about to be sent."""


# What a dry run answers to the reads the launchers make, so that the calls after them are shown
# with placeholders where the real values would be.
FAKE_ANSWERS = {
    "DescribeTrainingJob": lambda p: {"TrainingJobName": p["TrainingJobName"], "TrainingJobStatus": "Completed",
                                      "ModelArtifacts": {"S3ModelArtifacts": f"<S3ModelArtifacts of {p['TrainingJobName']}>"}},
    "DescribeEndpoint": lambda p: {"EndpointName": p["EndpointName"],
                                   "EndpointConfigName": f"<EndpointConfigName of {p['EndpointName']}>"},
    "DescribeEndpointConfig": lambda p: {"ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": f"<ModelName in {p['EndpointConfigName']}>"}]},
    "InvokeEndpoint": lambda p: {"ContentType": "application/json", "Body": _streaming(b'{"predictions": [[]]}')},
}


def _streaming(data: bytes):
    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(data), len(data))


def _printable(value):
    """Request parameters as JSON: request bodies shown by their size, not their bytes."""
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass
class DryRun:
    """Records every AWS request made through a boto3 session and sends none: botocore's before-call
    answer skips the HTTP request, and a before-send hook fails any request that gets further."""

    requests: list[tuple[str, str, dict]] = field(default_factory=list)

    def attach(self, boto_session) -> None:
        """Register on the session itself: every client made from it afterwards inherits the hooks."""
        boto_session.events.register("before-parameter-build", self._record)
        boto_session.events.register("before-call", self._answer)
        boto_session.events.register("before-send", self._refuse)

    def _record(self, params, model, **_) -> None:
        self.requests.append((model.service_model.service_name, model.name, _printable(params)))

    def _answer(self, model, params, **_) -> tuple:
        from botocore.awsrequest import AWSResponse

        operation = model.name
        recorded = self.requests[-1][2] if self.requests else {}
        if operation in FAKE_ANSWERS:
            response = FAKE_ANSWERS[operation](recorded)
        else:
            response = {f"{noun}Arn": f"arn:aws:dry-run:{operation}" for noun in
                        ("TrainingJob", "HyperParameterTuningJob", "Model", "EndpointConfig", "Endpoint", "TransformJob",
                         "Policy", "ScalableTarget")}
        response["ResponseMetadata"] = {"HTTPStatusCode": 200}
        return AWSResponse("https://dry-run.invalid", 200, {}, None), response

    def _refuse(self, event_name: str = "", **_) -> None:
        raise DryRunLeak(f"dry run: {event_name} was about to send a request; refused")

    def print(self) -> None:
        for service, operation, params in self.requests:
            print(f"--- {service} {operation} (not sent)")
            print(json.dumps(params, indent=1))


def session(target: Target, dry_run: DryRun | None = None):
    """A sagemaker Session (LocalSession with --local) over one boto3 session, with the user's SDK
    config and telemetry off; a dry run is attached before any client exists."""
    quiet_sdk()
    import boto3

    boto_session = boto3.Session(region_name=target.region)
    if dry_run is not None:
        dry_run.attach(boto_session)
    config = sdk_config(dry_run is not None)
    if target.local:
        from sagemaker.local import LocalSession

        local = LocalSession(boto_session=boto_session, sagemaker_config=config)
        local.config = {"local": {"local_code": True}}
        return local
    import sagemaker

    return sagemaker.Session(boto_session=boto_session, sagemaker_config=config)


def prefix_uri(location: str) -> str:
    """An S3 prefix ending in "/" (s3://b/dogs/valid would also match dogs/validation/...), or a
    local folder as file://."""
    if location.startswith("s3://"):
        return location.rstrip("/") + "/"
    return "file://" + str(Path(location.removeprefix("file://")).resolve())


def channels(target: Target) -> dict[str, str]:
    """train/valid/test under --data."""
    base = target.data.rstrip("/")
    return {name: prefix_uri(f"{base}/{name}") for name in ("train", "valid", "test")}


def tensorboard_config(output_path: str | None):
    """SageMaker uploads the job's LocalPath to S3OutputPath while it runs (TensorBoardOutputConfig)."""
    from sagemaker.debugger import TensorBoardOutputConfig

    if not output_path or not output_path.startswith("s3://"):
        return None
    return TensorBoardOutputConfig(s3_output_path=f"{output_path}/tensorboard", container_local_output_path=TENSORBOARD_LOCAL_PATH)


def job_name(base: str = "imgclf") -> str:
    from sagemaker.utils import name_from_base

    return name_from_base(base)


def estimator(target: Target, sess, hyperparameters: dict, job: str | None = None, **debug) -> object:
    """A generic Estimator for the image; Debugger and TensorBoard only when ``debug`` gives them.
    Spot jobs keep their checkpoints under their own name (``job``, the name fit() must use): a
    restarted spot job resumes from its own checkpoints, never from another job's."""
    from sagemaker.estimator import Estimator

    if target.spot and not job:
        raise LaunchError("--spot needs a job name for the job's own checkpoint prefix")
    spot = {"use_spot_instances": True, "max_wait": target.max_run * 2,
            "checkpoint_s3_uri": f"{target.output_path}/checkpoints/{job}"} if target.spot and target.output_path else {}
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


def model_data_of(sess, source: str) -> str:
    """An s3:// or file:// model.tar.gz as given, or the artifacts of a training job by name."""
    if source.startswith(("s3://", "file://")):
        return source
    job = sess.sagemaker_client.describe_training_job(TrainingJobName=source)
    if "ModelArtifacts" not in job:
        raise LaunchError(f"training job {source} has no model artifacts (status {job.get('TrainingJobStatus')})")
    return job["ModelArtifacts"]["S3ModelArtifacts"]


def upload_file(sess, path: Path, s3_uri: str) -> None:
    bucket, _, key = s3_uri.removeprefix("s3://").partition("/")
    sess.boto_session.client("s3").upload_file(str(path), bucket, key)


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


def inference_ami_version(instance_type: str, choice: str = "auto") -> str | None:
    """The AMI for a real-time endpoint: none on CPU types and local mode, else the newest one."""
    if choice != "auto":
        return None if choice == "none" else choice
    return INFERENCE_AMI_VERSIONS[0] if GPU_INSTANCE.match(instance_type) else None


def deploy(target: Target, sess, model_data: str, endpoint_name: str, wait: bool, ami: str = "auto") -> None:
    from sagemaker.model import Model

    model = Model(image_uri=target.image_uri, model_data=model_data, role=target.role, sagemaker_session=sess,
                  name=endpoint_name)
    model.deploy(initial_instance_count=target.instance_count, instance_type=target.instance_type,
                 endpoint_name=endpoint_name, wait=wait,
                 inference_ami_version=inference_ami_version(target.instance_type, ami))


def autoscale(sess, min_instances: int, endpoint_name: str, max_instances: int, invocations_per_instance: int) -> None:
    """Target tracking on SageMakerVariantInvocationsPerInstance for the endpoint's AllTraffic variant."""
    client = sess.boto_session.client("application-autoscaling")
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


def delete_endpoint(sess, endpoint_name: str) -> None:
    config = sess.sagemaker_client.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]
    models = [v["ModelName"] for v in sess.sagemaker_client.describe_endpoint_config(
        EndpointConfigName=config)["ProductionVariants"]]
    sess.delete_endpoint(endpoint_name)
    sess.delete_endpoint_config(config)
    for name in models:
        sess.delete_model(name)


def predict(sess, endpoint_name: str, body: bytes, content_type: str, top_k: int) -> dict:
    """InvokeEndpoint through the SDK's Predictor (boto3's sagemaker-runtime client, or local mode's);
    a transport or service error becomes one line."""
    import urllib3
    from botocore.exceptions import BotoCoreError, ClientError
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer

    predictor = Predictor(endpoint_name, sagemaker_session=sess, serializer=IdentitySerializer(content_type),
                          deserializer=JSONDeserializer())
    try:
        answer = predictor.predict(body, initial_args={"CustomAttributes": f"top_k={top_k}"})
    except (BotoCoreError, ClientError, urllib3.exceptions.HTTPError) as e:
        raise LaunchError(f"endpoint {endpoint_name}: {' '.join(str(e).split())}") from None
    if not isinstance(answer, dict) or "predictions" not in answer:
        raise LaunchError(f"endpoint {endpoint_name} answered {json.dumps(answer)[:500]}")
    return answer


@dataclass
class TransformSpec:
    """A batch transform over every object under an S3 prefix (or a local folder), one image each."""

    model_data: str
    input: str
    output_path: str
    content_type: str = "application/x-image"
    max_concurrent_transforms: int | None = None  # None: SageMaker asks the container's /execution-parameters
    max_payload_mb: int | None = None
    ami: str = "auto"


def transform_ami_version(instance_type: str, choice: str = "auto") -> str | None:
    if choice != "auto":
        return None if choice == "none" else choice
    return TRANSFORM_AMI_VERSION if GPU_INSTANCE.match(instance_type) else None


def _add_transform_ami(ami: str):
    """SDK 2.257's Transformer has no TransformAmiVersion argument: add it to the request."""
    def handler(params: dict, **_) -> None:
        params.setdefault("TransformResources", {})["TransformAmiVersion"] = ami
    return handler


def transform(target: Target, sess, spec: TransformSpec, wait: bool) -> str:
    """Create the model and run the transform job (SplitType None: each object is one request);
    returns where the ``<object>.out`` files go. BatchStrategy is given because SDK 2.257's local mode
    reads the container's /execution-parameters spelling (SINGLE_RECORD, as AWS documents it) as
    an invalid strategy; the API's spelling is SingleRecord."""
    from sagemaker.model import Model

    ami = transform_ami_version(target.instance_type, spec.ami)
    if ami and not target.local:
        sess.sagemaker_client.meta.events.register("provide-client-params.sagemaker.CreateTransformJob",
                                                   _add_transform_ami(ami))
    model = Model(image_uri=target.image_uri, model_data=spec.model_data, role=target.role, sagemaker_session=sess)
    transformer = model.transformer(
        instance_count=target.instance_count, instance_type=target.instance_type, output_path=spec.output_path,
        accept="application/json", max_concurrent_transforms=spec.max_concurrent_transforms,
        max_payload=spec.max_payload_mb, strategy="SingleRecord")
    transformer.transform(spec.input, data_type="S3Prefix", content_type=spec.content_type, split_type="None",
                          wait=wait, logs=False)
    return transformer.output_path
