"""One training job with SageMaker Debugger and profiler rules.

    python scripts/train_debug.py --data s3://BUCKET/dogs --output-path s3://BUCKET/imgclf \\
        --hyperparameters best_hyperparameters.json
    python scripts/train_debug.py ... --dry-run      # print the CreateTrainingJob request only

Hooks losses, weights, gradients and relu_input (which PoorWeightInitialization reads); rules:
LossNotDecreasing, VanishingGradient, Overfit, Overtraining, PoorWeightInitialization, and the
profiler's ProfilerReport and LowGPUUtilization. With --custom-rule-image (the
sagemaker-debugger-rule-evaluator image of your region, listed in the AWS docs under "Amazon
SageMaker Debugger image URIs for custom rule evaluators") our own LossNotDecreasing and
VanishingGradient from container/imgclf/rules.py run beside them as custom rules.

Debugger is closed to new AWS customers (2026-07-30); without it, the training job's own
``rules`` hyperparameter runs the same checks inside the container. Every job on SageMaker also
gets a TensorBoardOutputConfig (LocalPath /opt/ml/output/tensorboard, S3 under --output-path).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import launch

RULES_SOURCE = launch.REPO / "container" / "imgclf" / "rules.py"  # self-contained: the custom rules' source

# Save intervals in steps. The built-in rules default to 500, which saves one or two values in a
# job of this size (about 100 steps an epoch at batch 64).
SAVE_INTERVALS = {"losses": "10", "gradients": "20", "relu_input": "50", "weights": "50"}


def collection_configs() -> dict:
    from sagemaker.debugger import CollectionConfig

    configs = {name: CollectionConfig(name, parameters={"save_interval": every}) for name, every in SAVE_INTERVALS.items()}
    configs["relu_input"].parameters["include_regex"] = ".*relu_input"
    return configs


def debugger_settings(output_path: str | None, custom_rule_image: str | None, rules_source: str | None) -> dict:
    """Hook, built-in rules (with our save intervals), our custom rules when given an evaluator image,
    and the profiler's system-metric rules. The same CollectionConfig objects throughout: the SDK
    merges them into one set."""
    from sagemaker.debugger import DebuggerHookConfig, ProfilerConfig, ProfilerRule, Rule, rule_configs

    collections = collection_configs()

    def builtin(config, collection: str | None = None):
        return Rule.sagemaker(config, collections_to_save=[collections[collection]] if collection else None)

    rules = [builtin(rule_configs.loss_not_decreasing(), "losses"), builtin(rule_configs.vanishing_gradient(), "gradients"),
             builtin(rule_configs.overfit()), builtin(rule_configs.overtraining()),
             builtin(rule_configs.poor_weight_initialization(), "relu_input")]
    if custom_rule_image:
        rules += [Rule.custom(name=f"Imgclf{rule}", image_uri=custom_rule_image, instance_type="ml.t3.medium",
                              volume_size_in_gb=5, source=rules_source, rule_to_invoke=rule,
                              collections_to_save=[collections[collection]], rule_parameters=parameters)
                  for rule, collection, parameters in (
                      ("LossNotDecreasing", "losses", {"window": "5"}),  # saved values: 50 steps
                      ("VanishingGradient", "gradients", {}))]
    return {
        "debugger_hook_config": DebuggerHookConfig(
            s3_output_path=f"{output_path}/debug" if output_path else None, collection_configs=list(collections.values())),
        "rules": rules + [ProfilerRule.sagemaker(rule_configs.ProfilerReport()),
                          ProfilerRule.sagemaker(rule_configs.LowGPUUtilization())],
        "profiler_config": ProfilerConfig(system_monitor_interval_millis=500),
        "disable_profiler": False,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    launch.add_common_args(parser)
    parser.add_argument("--hyperparameters", type=Path, help="JSON from tune.py --best")
    parser.add_argument("--custom-rule-image", help="the sagemaker-debugger-rule-evaluator image URI of your region")
    args = parser.parse_args(argv)
    target = launch.target_from(args)
    if args.custom_rule_image and not target.output_path:
        raise launch.LaunchError("--custom-rule-image needs --output-path: the rules' source is uploaded there")
    hyperparameters = {"arch": "resnet50", "pretrained": "true", "batch-size": "256", "epochs": "3", "lr": "0.00105"}
    if args.hyperparameters:
        hyperparameters.update(json.loads(args.hyperparameters.read_text()))
    dry_run = launch.DryRun() if target.dry_run else None
    session = launch.session(target, dry_run)
    rules_source = f"{target.output_path}/debug-rules/rules.py" if args.custom_rule_image else None
    if rules_source and not target.local:
        if dry_run is None:
            launch.upload_file(session, RULES_SOURCE, rules_source)
        else:
            print(f"--- would upload {RULES_SOURCE} to {rules_source}")
    # local mode drops Debugger settings: the rules hyperparameter checks the same things in the container
    settings = {} if target.local else debugger_settings(target.output_path, args.custom_rule_image, rules_source)
    tensorboard = launch.tensorboard_config(target.output_path)
    name = launch.job_name()
    estimator = launch.estimator(target, session, hyperparameters, name, tensorboard_output_config=tensorboard, **settings)
    if tensorboard is not None:
        print(f"TensorBoard: SageMaker uploads {tensorboard.container_local_output_path} under {tensorboard.s3_output_path} "
              f"while the job runs; open it in SageMaker's TensorBoard app or: tensorboard --logdir {tensorboard.s3_output_path}")
    try:
        estimator.fit(launch.channels(target), wait=dry_run is None, job_name=name)
    except Exception as e:  # botocore ClientError and friends
        if "debug" in str(e).lower() or "rule" in str(e).lower():
            print("SageMaker refused the Debugger settings (Debugger is closed to new AWS customers since "
                  "2026-07-30): run without them and use the in-container rules hyperparameter instead.", file=sys.stderr)
            return 1
        raise
    if dry_run is not None:
        dry_run.print()
        return 0
    for summary in estimator.latest_training_job.rule_job_summary():
        print(f"rule {summary['RuleConfigurationName']}: {summary['RuleEvaluationStatus']}")
    print(f"model: {estimator.model_data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
