"""Plot what SageMaker Debugger saved: train and valid loss and gradient magnitudes by step, and
judge the trial with our own rules (imgclf.rules, the same ones the training job checks itself).

    python scripts/analyze_debug.py --job imgclf-debug-2026-11-25-10-00-00-000 --region us-east-1
    python scripts/analyze_debug.py --path s3://BUCKET/imgclf/debug/JOB/debug-output
    python scripts/analyze_debug.py --path /opt/ml/output/tensors --out debug.png   # a local trial

Needs the project's .venv (make venv): smdebug and matplotlib.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imgclf import report, rules

from .aws_errors import one_line_errors
from .flags import LaunchError


def debug_job(region: str | None, job_name: str) -> tuple[str, list[dict]]:
    """A Debugger job's tensor location and its rule evaluations (DescribeTrainingJob, plain boto3)."""
    import boto3

    job = boto3.client("sagemaker", region_name=region).describe_training_job(TrainingJobName=job_name)
    hook = job.get("DebugHookConfig")
    if not hook:
        raise LaunchError(f"training job {job_name} ran without a DebuggerHookConfig: it saved no tensors")
    path = f"{hook['S3OutputPath'].rstrip('/')}/{job_name}/debug-output"
    return path, job.get("DebugRuleEvaluationStatuses", [])


def read_trial(trial) -> tuple[dict, dict]:
    """Loss by mode, and the smallest and largest gradient mean |value|, by global step."""
    from smdebug.core.modes import ModeKeys

    losses: dict[str, tuple[list[int], list[float]]] = {}
    for name in trial.tensor_names(collection="losses")[:1]:
        tensor = trial.tensor(name)
        for mode, label in ((ModeKeys.TRAIN, "train"), (ModeKeys.EVAL, "valid")):
            steps = [s for s in tensor.steps() if trial.mode(s) == mode]
            if steps:
                losses[label] = (steps, [float(tensor.value(s)) for s in steps])
    by_step: dict[int, list[float]] = {}
    for name in trial.tensor_names(collection="gradients"):
        tensor = trial.tensor(name)
        for step in tensor.steps():
            if trial.mode(step) == ModeKeys.TRAIN:
                by_step.setdefault(step, []).append(float(abs(tensor.value(step)).mean()))
    steps = sorted(by_step)
    gradients = {"smallest": (steps, [min(by_step[s]) for s in steps]),
                 "largest": (steps, [max(by_step[s]) for s in steps])} if steps else {}
    return losses, gradients


def judge(trial) -> list[dict]:
    """Run each of our smdebug rules over the whole trial; the first step where it fires, if any."""
    from smdebug.exceptions import RuleEvaluationConditionMet
    from smdebug.rules.rule_invoker import invoke_rule

    end = trial.steps()[-1] + 1 if trial.steps() else 0
    outcomes = []
    for name, rule in rules.smdebug_rules().items():
        try:
            invoke_rule(rule(trial), start_step=0, end_step=end, raise_eval_cond=True)
            outcomes.append({"rule": name, "fired": False})
        except RuleEvaluationConditionMet as e:
            outcomes.append({"rule": name, "fired": True, "step": e.step})
    return outcomes


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--job", help="a training job that ran with a DebuggerHookConfig")
    source.add_argument("--path", help="the tensors: s3://... or a local folder")
    parser.add_argument("--region", default=None)
    parser.add_argument("--out", type=Path, default=Path("debug_analysis.png"))
    args = parser.parse_args(argv)
    try:
        from smdebug.trials import create_trial
    except ImportError as e:
        raise LaunchError(f"{e}: reading a Debugger trial needs smdebug 1.0.34 and matplotlib, not in the launchers' "
                          "requirements: use the project's .venv (make venv) or pip install -r container/requirements.txt") from None

    path = args.path
    if args.job:
        path, statuses = debug_job(args.region, args.job)
        for status in statuses:
            print(f"SageMaker rule {status['RuleConfigurationName']}: {status['RuleEvaluationStatus']}")
    if not path.startswith("s3://") and not (Path(path) / "collections").is_dir():
        raise LaunchError(f"no Debugger output under {path} (smdebug would wait for it forever)")
    trial = create_trial(path)  # on S3 it waits for a running job's first tensors
    if not trial.steps():
        raise LaunchError(f"no steps saved under {path}")
    losses, gradients = read_trial(trial)
    outcomes = judge(trial)
    for outcome in outcomes:
        print(f"rule {outcome['rule']}: " + (f"FIRED at step {outcome['step']}" if outcome["fired"] else "ok"))
    figure, axes = report.load_pyplot().subplots(1, 2, figsize=(12, 4.5))
    report.plot_steps(axes, losses, gradients, [o for o in outcomes if o["fired"]])
    figure.suptitle(f"Debugger trial {path}", fontsize=10)
    print(f"plot: {report.save(figure, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
