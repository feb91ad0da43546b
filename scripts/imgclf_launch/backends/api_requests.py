"""SageMaker API requests built from our job descriptions, in the shapes 2.x's Estimator, Tuner, Model
and Transformer send for this image (tests/expected_requests holds them)."""

from __future__ import annotations

from imgclf.metrics import METRIC_DEFINITIONS, OBJECTIVE_METRIC, OBJECTIVE_TYPE

from ..jobs import Debugger, Deployment, SearchSpace, Target, TrainingJob, Transform, Tuning
from .base import TENSORBOARD_LOCAL_PATH

VOLUME_SIZE_GB = 30  # the 2.x Estimator's default volume


def channel(name: str, uri: str) -> dict:
    """An S3 prefix, or (local mode) a file:// folder."""
    if uri.startswith("file://"):
        source = {"FileDataSource": {"FileDataDistributionType": "FullyReplicated", "FileUri": uri}}
    else:
        source = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}
    return {"DataSource": source, "ChannelName": name}


def debugger_fields(debugger: Debugger | None, output_path: str, rules: dict) -> dict:
    """DebugHookConfig, the backend's rule configurations and ProfilerConfig (off without Debugger, as 2.x)."""
    if debugger is None:
        return {"ProfilerConfig": {"DisableProfiler": True}}
    hook = {"CollectionConfigurations": [{"CollectionName": c.name, "CollectionParameters": c.parameters()}
                                         for c in debugger.collections]}
    return ({"DebugHookConfig": ({"S3OutputPath": debugger.s3_output_path} if debugger.s3_output_path else {}) | hook}
            | rules | {"ProfilerConfig": {"S3OutputPath": output_path, "DisableProfiler": False,
                                          "ProfilingIntervalInMilliseconds": debugger.profiler_interval_ms}})


def training_job(target: Target, job: TrainingJob, output_path: str, rules: dict) -> dict:
    """CreateTrainingJob. Spot jobs keep their checkpoints under their own name."""
    spot = target.spot and target.output_path
    distributed = {"sagemaker_torch_distributed_enabled": "true"} if target.distributed else {}
    stop_waiting = {"MaxWaitTimeInSeconds": target.max_run * 2} if spot else {}
    request = {
        "TrainingJobName": job.name, "RoleArn": target.role,
        "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": target.image_uri,
                                   "MetricDefinitions": [dict(d) for d in METRIC_DEFINITIONS]},
        "OutputDataConfig": {"S3OutputPath": output_path},
        "StoppingCondition": {"MaxRuntimeInSeconds": target.max_run} | stop_waiting,
        "ResourceConfig": {"VolumeSizeInGB": VOLUME_SIZE_GB, "InstanceCount": target.instance_count,
                           "InstanceType": target.instance_type},
        "InputDataConfig": [channel(name, uri) for name, uri in job.channels.items()],
        "HyperParameters": job.hyperparameters | distributed,
    }
    if spot:
        request |= {"EnableManagedSpotTraining": True,
                    "CheckpointConfig": {"S3Uri": f"{target.output_path}/checkpoints/{job.name}"}}
    if job.tensorboard_s3:
        request["TensorBoardOutputConfig"] = {"S3OutputPath": job.tensorboard_s3, "LocalPath": TENSORBOARD_LOCAL_PATH}
    return request | debugger_fields(job.debugger, output_path, rules)


def parameter_ranges(space: SearchSpace) -> dict:
    return {
        "ContinuousParameterRanges": [{"Name": name, "MinValue": str(low), "MaxValue": str(high), "ScalingType": scaling}
                                      for name, (low, high, scaling) in space.continuous.items()],
        "CategoricalParameterRanges": [{"Name": name, "Values": list(values)} for name, values in space.categorical.items()],
        "IntegerParameterRanges": [{"Name": name, "MinValue": str(low), "MaxValue": str(high), "ScalingType": "Auto"}
                                   for name, (low, high) in space.integer.items()],
    }


def tuning_job(target: Target, job: TrainingJob, tuning: Tuning, name: str, output_path: str) -> dict:
    """CreateHyperParameterTuningJob: Bayesian search for the objective metric, no early stopping."""
    trial = training_job(target, job, output_path, {})
    definition = {
        "StaticHyperParameters": trial["HyperParameters"], "RoleArn": target.role,
        "OutputDataConfig": trial["OutputDataConfig"], "StoppingCondition": trial["StoppingCondition"],
        "HyperParameterTuningResourceConfig": trial["ResourceConfig"], "AlgorithmSpecification": trial["AlgorithmSpecification"],
        "InputDataConfig": trial["InputDataConfig"],
    }
    config = {"Strategy": "Bayesian",
              "ResourceLimits": {"MaxNumberOfTrainingJobs": tuning.max_jobs, "MaxParallelTrainingJobs": tuning.max_parallel_jobs},
              "TrainingJobEarlyStoppingType": "Off",
              "HyperParameterTuningJobObjective": {"Type": OBJECTIVE_TYPE, "MetricName": OBJECTIVE_METRIC},
              "ParameterRanges": parameter_ranges(tuning.search_space)}
    return {"HyperParameterTuningJobName": name, "HyperParameterTuningJobConfig": config, "TrainingJobDefinition": definition}


def model(target: Target, name: str, model_data: str, environment: dict[str, str]) -> dict:
    return {"ModelName": name, "ExecutionRoleArn": target.role,
            "PrimaryContainer": {"Image": target.image_uri, "Environment": dict(environment), "ModelDataUrl": model_data}}


def endpoint_config(target: Target, deployment: Deployment, model_name: str) -> dict:
    """One AllTraffic variant: on instances, or serverless; asynchronous with an S3 output path."""
    variant = {"ModelName": model_name, "VariantName": "AllTraffic", "InitialVariantWeight": 1}
    if deployment.serverless:
        variant["ServerlessConfig"] = {"MemorySizeInMB": deployment.serverless.memory_mb,
                                       "MaxConcurrency": deployment.serverless.max_concurrency}
    else:
        variant |= {"InitialInstanceCount": target.instance_count, "InstanceType": target.instance_type}
    if deployment.ami:
        variant["InferenceAmiVersion"] = deployment.ami
    request = {"EndpointConfigName": deployment.endpoint_name, "ProductionVariants": [variant]}
    if deployment.async_output:
        request["AsyncInferenceConfig"] = {"OutputConfig": {"S3OutputPath": deployment.async_output,
                                                              "S3FailurePath": deployment.async_failures}}
    return request


def transform_job(target: Target, spec: Transform, name: str, model_name: str) -> dict:
    """CreateTransformJob: every object under the prefix, one request each (SplitType None)."""
    resources = {"InstanceCount": target.instance_count, "InstanceType": target.instance_type}
    limits = {key: value for key, value in (("MaxConcurrentTransforms", spec.max_concurrent_transforms),
                                            ("MaxPayloadInMB", spec.max_payload_mb)) if value is not None}
    return {
        "TransformJobName": name, "ModelName": model_name,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec.input}},
                           "ContentType": spec.content_type, "SplitType": "None"},
        "TransformOutput": {"S3OutputPath": spec.output_path, "Accept": "application/json"},
        "TransformResources": resources | ({"TransformAmiVersion": spec.ami} if spec.ami else {}),
        "BatchStrategy": "SingleRecord",
    } | limits
