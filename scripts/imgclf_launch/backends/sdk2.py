"""The SageMaker Python SDK 2.x backend (2.257): generic Estimator, HyperparameterTuner, Model,
Transformer and Predictor; ``sagemaker.local.LocalSession`` for --local."""

from __future__ import annotations

from imgclf.metrics import METRIC_DEFINITIONS, OBJECTIVE_METRIC, OBJECTIVE_TYPE

from ..debugger import rule_config_function
from ..flags import LaunchError
from ..jobs import Debugger, Deployment, SearchSpace, Target, TrainingJob, TrainingResult, Transform, Tuning, TuningResult
from .base import TENSORBOARD_LOCAL_PATH, Backend


def debugger_arguments(debugger: Debugger) -> dict:
    """Estimator arguments for the hook, the rules (sharing its CollectionConfigs, merged by the SDK), the profiler."""
    from sagemaker.debugger import CollectionConfig, DebuggerHookConfig, ProfilerConfig, ProfilerRule, Rule, rule_configs

    collections = {c.name: CollectionConfig(c.name, parameters=c.parameters()) for c in debugger.collections}
    rules = [Rule.sagemaker(getattr(rule_configs, rule_config_function(name))(),
                            collections_to_save=[collections[collection]] if collection else None)
             for name, collection in debugger.builtin_rules]
    rules += [Rule.custom(name=rule.name, image_uri=rule.image, instance_type=rule.instance_type,
                          volume_size_in_gb=rule.volume_size_gb, source=rule.source, rule_to_invoke=rule.rule_to_invoke,
                          collections_to_save=[collections[rule.collection]], rule_parameters=dict(rule.parameters))
              for rule in debugger.custom_rules]
    rules += [ProfilerRule.sagemaker(getattr(rule_configs, name)()) for name in debugger.profiler_rules]
    return {"debugger_hook_config": DebuggerHookConfig(s3_output_path=debugger.s3_output_path,
                                                       collection_configs=list(collections.values())),
            "rules": rules, "profiler_config": ProfilerConfig(system_monitor_interval_millis=debugger.profiler_interval_ms),
            "disable_profiler": False}


def parameter_ranges(space: SearchSpace) -> dict:
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter, IntegerParameter

    return ({name: ContinuousParameter(low, high, scaling_type=scaling) for name, (low, high, scaling) in space.continuous.items()}
            | {name: CategoricalParameter(list(values)) for name, values in space.categorical.items()}
            | {name: IntegerParameter(low, high) for name, (low, high) in space.integer.items()})


class Sdk(Backend):
    @staticmethod
    def load_sagemaker_config() -> dict:
        from sagemaker.config import load_sagemaker_config

        return load_sagemaker_config()

    @staticmethod
    def sdk_session(target: Target, boto, config: dict):
        """A sagemaker Session, or local mode's LocalSession."""
        if target.local:
            from sagemaker.local import LocalSession

            return LocalSession(boto_session=boto, sagemaker_config=config)
        import sagemaker

        return sagemaker.Session(boto_session=boto, sagemaker_config=config)

    def _estimator(self, job: TrainingJob):
        """A generic Estimator for the image; a spot job's checkpoints under its own name."""
        from sagemaker.debugger import TensorBoardOutputConfig
        from sagemaker.estimator import Estimator

        target = self.target
        if target.spot and not job.name:
            raise LaunchError("--spot needs a job name for the job's own checkpoint prefix")
        spot = {"use_spot_instances": True, "max_wait": target.max_run * 2,
                "checkpoint_s3_uri": f"{target.output_path}/checkpoints/{job.name}"} if target.spot and target.output_path else {}
        debug = debugger_arguments(job.debugger) if job.debugger else {}
        tensorboard = TensorBoardOutputConfig(s3_output_path=job.tensorboard_s3, container_local_output_path=TENSORBOARD_LOCAL_PATH) \
            if job.tensorboard_s3 else None
        return Estimator(
            image_uri=target.image_uri, role=target.role, instance_count=target.instance_count,
            instance_type=target.instance_type,
            output_path=self.output_path(),
            hyperparameters=job.hyperparameters | ({"sagemaker_torch_distributed_enabled": "true"} if target.distributed else {}),
            metric_definitions=METRIC_DEFINITIONS, max_run=target.max_run, sagemaker_session=self.session,
            debugger_hook_config=debug.pop("debugger_hook_config", False),  # 2.257 adds one to every job otherwise
            disable_profiler=debug.pop("disable_profiler", True), tensorboard_output_config=tensorboard,
            **spot, **debug,
        )

    def train(self, job: TrainingJob, wait: bool) -> TrainingResult | None:
        estimator = self._estimator(job)
        estimator.fit(job.channels, wait=wait, job_name=job.name)
        if not wait:
            return None
        rules = tuple((s["RuleConfigurationName"], s["RuleEvaluationStatus"])
                      for s in (estimator.latest_training_job.rule_job_summary() if job.debugger else []))
        return TrainingResult(estimator.latest_training_job.name, estimator.model_data, rules)

    def tune(self, job: TrainingJob, tuning: Tuning, wait: bool) -> TuningResult | None:
        from sagemaker.tuner import HyperparameterTuner

        tuner = HyperparameterTuner(
            self._estimator(job), OBJECTIVE_METRIC, parameter_ranges(tuning.search_space), METRIC_DEFINITIONS,
            objective_type=OBJECTIVE_TYPE, max_jobs=tuning.max_jobs, max_parallel_jobs=tuning.max_parallel_jobs)
        tuner.fit(job.channels, wait=wait)
        if not wait:
            return None
        best = tuner.best_training_job()
        return TuningResult(best, self.sagemaker_client.describe_training_job(TrainingJobName=best)["HyperParameters"])

    def deploy(self, deployment: Deployment, wait: bool) -> None:
        from sagemaker.model import Model

        target = self.target
        model = Model(image_uri=target.image_uri, model_data=deployment.model_data, role=target.role,
                      sagemaker_session=self.session, name=deployment.endpoint_name, env=dict(deployment.environment))
        model.deploy(endpoint_name=deployment.endpoint_name, wait=wait, inference_ami_version=deployment.ami,
                     **hosting_arguments(target, deployment))

    def transform(self, spec: Transform, wait: bool) -> str:
        """The model and the transform job, with BatchStrategy given (docs/launchers.md, "Batch transform");
        returns where the ``<object>.out`` files go."""
        from sagemaker.model import Model

        target = self.target
        if spec.ami:  # 2.257's Transformer has no TransformAmiVersion argument
            self.sagemaker_client.meta.events.register("provide-client-params.sagemaker.CreateTransformJob",
                                                       add_transform_ami(spec.ami))
        model = Model(image_uri=target.image_uri, model_data=spec.model_data, role=target.role, sagemaker_session=self.session,
                      env=dict(spec.environment))
        transformer = model.transformer(
            instance_count=target.instance_count, instance_type=target.instance_type, output_path=spec.output_path,
            accept="application/json", max_concurrent_transforms=spec.max_concurrent_transforms,
            max_payload=spec.max_payload_mb, strategy="SingleRecord")
        transformer.transform(spec.input, data_type="S3Prefix", content_type=spec.content_type, split_type="None",
                              wait=wait, logs=False)
        return transformer.output_path

    def predict(self, endpoint_name: str, body: bytes, content_type: str, top_k: int) -> dict:
        """InvokeEndpoint through the SDK's Predictor (boto3's sagemaker-runtime client, or local mode's)."""
        from sagemaker.deserializers import JSONDeserializer
        from sagemaker.predictor import Predictor
        from sagemaker.serializers import IdentitySerializer

        predictor = Predictor(endpoint_name, sagemaker_session=self.session, serializer=IdentitySerializer(content_type),
                              deserializer=JSONDeserializer())
        return predictor.predict(body, initial_args={"CustomAttributes": f"top_k={top_k}"})


def hosting_arguments(target: Target, deployment: Deployment) -> dict:
    """Model.deploy's arguments for instances or serverless, and for an asynchronous endpoint."""
    from sagemaker.async_inference import AsyncInferenceConfig
    from sagemaker.serverless import ServerlessInferenceConfig

    serverless = deployment.serverless
    hosting = {"serverless_inference_config": ServerlessInferenceConfig(serverless.memory_mb, serverless.max_concurrency)} \
        if serverless else {"initial_instance_count": target.instance_count, "instance_type": target.instance_type}
    if deployment.async_output:
        hosting["async_inference_config"] = AsyncInferenceConfig(output_path=deployment.async_output,
                                                                 failure_path=deployment.async_failures)
    return hosting


def add_transform_ami(ami: str):
    def handler(params: dict, **_) -> None:
        params.setdefault("TransformResources", {})["TransformAmiVersion"] = ami
    return handler

