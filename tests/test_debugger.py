"""Training-health checks three ways: SageMaker Debugger locally (the real `train` with a
debughookconfig.json as SageMaker writes it, the trial read back with smdebug and judged by our
custom rules), the same rules inside the training loop (the `rules` hyperparameter), and the
torch.profiler option."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest
from PIL import Image

from conftest import FAST, channels_of, run_job
from imgclf.rules import loss_not_decreasing, overfit, vanishing_gradient
from imgclf_launch import analyze_debug


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
def test_rules_on_a_real_debugger_trial_and_in_the_loop(tmp_path, sample_data, lr, stalls, capsys):
    from smdebug.exceptions import RuleEvaluationConditionMet
    from smdebug.rules.rule_invoker import invoke_rule
    from smdebug.trials import create_trial

    from imgclf.rules import smdebug_rules

    tensors, base = tmp_path / "tensors", tmp_path / "ml"
    code, output = run_job(base, channels_of(sample_data), {**FAST, "lr": lr, "epochs": "3"},
                           config_files={"debughookconfig.json": hook_config(tensors)})
    assert code == 0, output[-3000:]
    assert "SageMaker Debugger hook from" in output
    trial = create_trial(str(tensors))
    assert trial.tensor_names(collection="losses") and len(trial.tensor_names(collection="gradients")) > 10
    last = trial.steps()[-1] + 1
    rules = smdebug_rules()

    loss_rule = rules["LossNotDecreasing"](trial, window="20")  # parameters arrive as strings
    if stalls:
        with pytest.raises(RuleEvaluationConditionMet):
            invoke_rule(loss_rule, start_step=0, end_step=last, raise_eval_cond=True)
    else:
        invoke_rule(loss_rule, start_step=0, end_step=last, raise_eval_cond=True)
    invoke_rule(rules["VanishingGradient"](trial), start_step=0, end_step=last, raise_eval_cond=True)  # never vanishes here

    # The same rule inside the training loop, from the loop's own values (action: log).
    report = json.loads((base / "output/data/rules_report.json").read_text())
    assert report["rules"]["loss_not_decreasing"]["fired"] is stalls
    assert report["rules"]["vanishing_gradient"]["fired"] is False
    assert report["stopped_at_step"] is None and len(json.loads((base / "output/data/metrics.json").read_text())["history"]) == 3
    assert ("rule loss_not_decreasing fired at step" in output) is stalls

    # analyze_debug.py plots the trial and judges it with the same rules.
    png = tmp_path / "analysis.png"
    assert analyze_debug.main(["--path", str(tensors), "--out", str(png)]) == 0
    printed = capsys.readouterr().out
    assert ("rule LossNotDecreasing: FIRED at step" in printed) is stalls
    assert "rule VanishingGradient: ok" in printed
    assert Image.open(png).size[0] > 500


def test_analyze_a_job_by_name_reads_its_debugger_output(monkeypatch, tmp_path, capsys):
    def debug_job(region, name):  # DescribeTrainingJob needs AWS
        return str(tmp_path / "empty"), [{"RuleConfigurationName": "LossNotDecreasing", "RuleEvaluationStatus": "NoIssuesFound"}]

    monkeypatch.setattr(analyze_debug, "debug_job", debug_job)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="^error: no Debugger output under " + re.escape(str(tmp_path / "empty"))):
        analyze_debug.main(["--job", "job-1", "--region", "us-east-1", "--out", str(tmp_path / "a.png")])
    assert "SageMaker rule LossNotDecreasing: NoIssuesFound" in capsys.readouterr().out


def test_stop_action_ends_a_stalled_job_early_with_a_model_and_a_profile(tmp_path, sample_data):
    base = tmp_path / "ml"
    code, output = run_job(base, channels_of(sample_data),
                           {**FAST, "lr": "0", "epochs": "4", "rules-action": "stop", "profile-steps": "3"})
    assert code == 0, output[-3000:]
    assert "stopping training: rule loss_not_decreasing fired and rules-action is stop" in output
    data = base / "output" / "data"
    report = json.loads((data / "rules_report.json").read_text())
    steps_per_epoch = 1258 // 64
    stopped = report["stopped_at_step"]
    assert 2 * 20 <= stopped < 4 * steps_per_epoch  # it judges once two 20-step windows exist
    assert len(json.loads((data / "metrics.json").read_text())["history"]) == -(-stopped // steps_per_epoch)
    assert (base / "model" / "model.pt").is_file()
    assert Image.open(data / "rules_report.png").size[0] > 500
    trace = next((data / "profiler").glob("*.pt.trace.json"))
    events = json.loads(trace.read_text())["traceEvents"]
    assert any("ProfilerStep#4" in e.get("name", "") for e in events)
    assert not any("ProfilerStep#7" in e.get("name", "") for e in events)  # steps 4-6 only


def test_training_report_has_curves_and_confused_pairs(trained):
    base, _ = trained
    data = base / "output" / "data"
    report = json.loads((data / "training_report.json").read_text())
    assert len(report["history"]) == 5 and report["confused_pairs"]["split"] == "test"
    labels = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    for pair in report["confused_pairs"]["pairs"]:
        assert {pair["true"], pair["predicted"]} <= labels and pair["true"] != pair["predicted"]
        assert 0 < pair["count"] <= pair["of"]
    counts = [p["count"] for p in report["confused_pairs"]["pairs"]]
    assert counts == sorted(counts, reverse=True)
    assert Image.open(data / "training_report.png").size == (1600, 450)


def test_no_config_means_no_hook_and_no_smdebug(trained):
    _, output = trained
    assert "SageMaker Debugger" not in output and "smdebug" not in output
    script = "import sys, imgclf.train; assert 'smdebug' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", script]).returncode == 0


def test_rules_file_works_alone_as_a_custom_rule_source():
    """Debugger's rule container gets rules.py by itself (train_debug.py --custom-rule-image)."""
    from smdebug.rules.rule import Rule

    import imgclf.rules

    spec = importlib.util.spec_from_file_location("custom_rule_source", imgclf.rules.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert issubclass(module.LossNotDecreasing, Rule) and issubclass(module.VanishingGradient, Rule)
    with pytest.raises(AttributeError):
        module.DeadRelu


def test_rule_functions():
    assert loss_not_decreasing([3, 3, 3, 3, 3, 2.9, 3.1, 3, 3, 2.95], window=5, min_decrease=0.05) is True
    assert loss_not_decreasing([3, 3, 3, 3, 3, 2.9, 3.1, 3, 3, 2.95], window=5) is False  # it did go down a little
    assert loss_not_decreasing([3, 2.8, 2.6, 2.4, 2.2, 2.0, 1.8, 1.6, 1.4, 1.2], window=5) is False
    assert loss_not_decreasing([3] * 39) is False  # too few values to judge
    assert loss_not_decreasing([3] * 40) is True
    assert vanishing_gradient([1e-9, 5e-8]) is True and vanishing_gradient([1e-9, 1e-3]) is False
    assert vanishing_gradient([]) is False
    assert overfit([1.0, 0.5, 0.3], [0.8, 0.6, 0.7]) is True  # valid 17% above its best, train still falling
    assert overfit([1.0, 0.5, 0.3], [0.8, 0.6, 0.65]) is False  # within 10%
    assert overfit([1.0, 0.5, 0.6], [0.8, 0.6, 0.7]) is False  # train rose too: not overfitting
    assert overfit([1.0], [0.8]) is False


def test_monitor_reads_fp16_gradients_unscaled():
    """GradScaler.step unscales the gradients in place, so the monitor (called after it) must not
    divide by the scale again: with a 2**16 scale that would make every gradient look vanishing."""
    import torch

    from imgclf.monitor import RuleMonitor

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    loss = model(torch.randn(8, 4)).square().mean()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    expected = max(p.grad.abs().mean().item() for p in model.parameters())
    assert expected > 1e-3  # the plain gradient, not 2**16 times it
    monitor = RuleMonitor(["vanishing_gradient"], stop=False, steps_per_epoch=10)
    monitor.after_step(loss, model)
    assert monitor.series["grad_max"] == [pytest.approx(expected)]
    assert monitor.firings == []


def test_monitor_sees_vanishing_gradients_and_overfitting():
    import torch

    from imgclf.monitor import RuleMonitor

    model = torch.nn.Linear(4, 2)
    monitor = RuleMonitor(["vanishing_gradient", "overfit"], stop=False, steps_per_epoch=10)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-9)
    assert monitor.after_step(torch.tensor(1.0), model) is False
    assert [f["rule"] for f in monitor.firings] == ["vanishing_gradient"]
    assert len(monitor.firings) == 1
    for train, valid in ((1.0, 0.8), (0.5, 0.6), (0.3, 0.7)):
        monitor.after_epoch(train, valid)
    assert monitor.firings[-1]["rule"] == "overfit" and monitor.firings[-1]["epoch"] == 3
    stopping = RuleMonitor(["overfit"], stop=True, steps_per_epoch=10)
    assert [stopping.after_epoch(t, v) for t, v in ((1.0, 0.8), (0.5, 0.6), (0.3, 0.7))] == [False, False, True]


def test_monitor_messages_say_why_each_rule_fired(caplog):
    import torch

    from imgclf.monitor import RuleMonitor

    model = torch.nn.Linear(4, 2)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-9)
    monitor = RuleMonitor(["loss_not_decreasing", "vanishing_gradient", "overfit"], stop=False, steps_per_epoch=10)
    for _ in range(40):  # interval 1, window 20: the 40th step compares two windows of 20
        monitor.after_step(torch.tensor(2.0), model)
    for train, valid in ((1.0, 0.8), (0.5, 0.6), (0.3, 0.7)):
        monitor.after_epoch(train, valid)
    first = {f["rule"]: f["message"] for f in reversed(monitor.firings)}
    assert first == {
        "loss_not_decreasing": "mean train loss of the last 20 steps (2) is not below that of the steps before (2)",
        "vanishing_gradient": "every gradient's mean |value| is below 1e-07 (largest 1e-09)",
        "overfit": "valid loss 0.7 is more than 10% above its best 0.6 while the train loss kept falling",
    }
    assert [f["step"] for f in monitor.firings if f["rule"] == "loss_not_decreasing"][0] == 40
    logged = [r.getMessage() for r in caplog.records if r.name == "imgclf.monitor"]
    assert "rule vanishing_gradient fired at step 1 (epoch 1): every gradient's mean |value| is below 1e-07 " \
           "(largest 1e-09)" in logged


def test_debugger_rule_parameters_are_checked():
    pytest.importorskip("smdebug", reason="smdebug is in requirements-dev.txt; without it there is no Debugger rule")
    from imgclf.rules import smdebug_rules

    with pytest.raises(TypeError, match="LossNotDecreasing has no parameter"):
        smdebug_rules()["LossNotDecreasing"](object(), windows="5")
