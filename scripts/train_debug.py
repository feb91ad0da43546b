"""One training job with SageMaker Debugger and profiler rules.

    python scripts/train_debug.py --data s3://BUCKET/dogs --output-path s3://BUCKET/imgclf \\
        --hyperparameters best_hyperparameters.json
    python scripts/train_debug.py ... --dry-run      # print the CreateTrainingJob request only

Hooks losses, weights, gradients and relu_input (which PoorWeightInitialization reads); rules:
LossNotDecreasing, VanishingGradient, Overfit, Overtraining, PoorWeightInitialization, and the
profiler's ProfilerReport and LowGPUUtilization.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import launch

# The rules bring the collections they read (losses; gradients; relu_input for
# PoorWeightInitialization); we add weights. Naming one twice would send it twice.
EXTRA_COLLECTIONS = {"weights": "50"}  # save_interval in steps


def debugger_settings(output_path: str | None) -> dict:
    from sagemaker.debugger import (
        CollectionConfig, DebuggerHookConfig, ProfilerConfig, ProfilerRule, Rule, rule_configs,
    )

    collections = [CollectionConfig(name, parameters={"save_interval": every}) for name, every in EXTRA_COLLECTIONS.items()]
    rules = [Rule.sagemaker(rule_configs.loss_not_decreasing()), Rule.sagemaker(rule_configs.vanishing_gradient()),
             Rule.sagemaker(rule_configs.overfit()), Rule.sagemaker(rule_configs.overtraining()),
             Rule.sagemaker(rule_configs.poor_weight_initialization()),
             ProfilerRule.sagemaker(rule_configs.ProfilerReport()), ProfilerRule.sagemaker(rule_configs.LowGPUUtilization())]
    return {
        "debugger_hook_config": DebuggerHookConfig(
            s3_output_path=f"{output_path}/debug" if output_path else None, collection_configs=collections),
        "rules": rules,
        "profiler_config": ProfilerConfig(system_monitor_interval_millis=500),
        "disable_profiler": False,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    launch.add_common_args(parser)
    parser.add_argument("--hyperparameters", type=Path, help="JSON from tune.py --best")
    args = parser.parse_args(argv)
    target = launch.target_from(args)
    hyperparameters = {"arch": "resnet50", "pretrained": "true", "batch-size": "256", "epochs": "3", "lr": "0.00105"}
    if args.hyperparameters:
        hyperparameters.update(json.loads(args.hyperparameters.read_text()))
    dry_run = launch.DryRun() if target.dry_run else None
    session = launch.session(target, dry_run)
    settings = {} if target.local else debugger_settings(target.output_path)  # local mode drops Debugger settings
    estimator = launch.estimator(target, session, hyperparameters, **settings)
    try:
        estimator.fit(launch.channels(target), wait=dry_run is None)
    except Exception as e:  # botocore ClientError and friends
        if "debug" in str(e).lower() or "rule" in str(e).lower():
            print("SageMaker refused the Debugger settings (Debugger is closed to new AWS customers since "
                  "2026-07-30): run without them and use the in-container rules hyperparameter instead.", file=sys.stderr)
            return 1
        raise
    if dry_run is not None:
        launch.print_requests(dry_run)
        return 0
    for summary in estimator.latest_training_job.rule_job_summary():
        print(f"rule {summary['RuleConfigurationName']}: {summary['RuleEvaluationStatus']}")
    print(f"model: {estimator.model_data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
