"""SageMaker Debugger locally: the real `train` with a debughookconfig.json (as SageMaker writes it),
the saved trial read back with smdebug, and our custom rules run on it."""

from __future__ import annotations

import json

import pytest

from conftest import FAST, channels_of, run_job
from imgclf.rules import loss_not_decreasing, vanishing_gradient


def hook_config(tensors) -> str:
    return json.dumps({
        "LocalPath": str(tensors),
        "HookParameters": {"save_interval": "1"},
        "CollectionConfigurations": [
            {"CollectionName": "losses", "CollectionParameters": {"save_interval": "1"}},
            {"CollectionName": "gradients", "CollectionParameters": {"save_interval": "5"}},
        ],
    })


@pytest.mark.parametrize(("lr", "stalls"), [("0.002", False), ("0", True)])
def test_rules_on_a_real_debugger_trial(tmp_path, sample_data, lr, stalls):
    from smdebug.exceptions import RuleEvaluationConditionMet
    from smdebug.rules.rule_invoker import invoke_rule
    from smdebug.trials import create_trial

    from imgclf.rules import smdebug_rules

    tensors = tmp_path / "tensors"
    code, output = run_job(tmp_path / "ml", channels_of(sample_data), {**FAST, "lr": lr},
                           config_files={"debughookconfig.json": hook_config(tensors)})
    assert code == 0, output[-3000:]
    assert "SageMaker Debugger hook from" in output
    trial = create_trial(str(tensors))
    assert trial.tensor_names(collection="losses") and len(trial.tensor_names(collection="gradients")) > 10
    last = trial.steps()[-1] + 1
    rules = smdebug_rules()

    loss_rule = rules["LossNotDecreasing"](trial)
    if stalls:
        with pytest.raises(RuleEvaluationConditionMet):
            invoke_rule(loss_rule, start_step=0, end_step=last, raise_eval_cond=True)
    else:
        invoke_rule(loss_rule, start_step=0, end_step=last, raise_eval_cond=True)
    invoke_rule(rules["VanishingGradient"](trial), start_step=0, end_step=last, raise_eval_cond=True)  # never vanishes here


def test_no_config_means_no_hook_and_no_smdebug(trained):
    _, output = trained
    assert "SageMaker Debugger" not in output and "smdebug" not in output


def test_rule_functions():
    assert loss_not_decreasing([3, 3, 3, 3, 3, 2.9, 3.1, 3, 3, 2.95]) is True
    assert loss_not_decreasing([3, 2.8, 2.6, 2.4, 2.2, 2.0, 1.8, 1.6, 1.4, 1.2]) is False
    assert loss_not_decreasing([3, 3, 3]) is False  # too few values to judge
    assert vanishing_gradient([1e-9, 5e-8]) is True and vanishing_gradient([1e-9, 1e-3]) is False
    assert vanishing_gradient([]) is False
