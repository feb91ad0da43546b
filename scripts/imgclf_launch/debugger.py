"""The Debugger settings of train_debug.py: hook collections, built-in, custom and profiler rules."""

from __future__ import annotations

import re
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path

from imgclf.archs import ARCHS

from .jobs import Collection, CustomRule, Debugger

# The custom rules' source: imgclf/rules.py is self-contained (smdebug only).
RULES_SOURCE = Path(find_spec("imgclf.rules").origin)

# Save intervals in steps (docs/observability.md); relu_input holds the arch's activation inputs (imgclf.archs).
COLLECTIONS = (Collection("losses", 10), Collection("gradients", 20), Collection("relu_input", 50),
               Collection("weights", 50))
# (rule, the collection it reads)
BUILTIN_RULES = (("LossNotDecreasing", "losses"), ("VanishingGradient", "gradients"), ("Overfit", None),
                 ("Overtraining", None), ("PoorWeightInitialization", "relu_input"))
PROFILER_RULES = ("ProfilerReport", "LowGPUUtilization")
# Our own rules from imgclf/rules.py: (rule, collection, parameters); a window of 5 saved losses is 50 steps.
CUSTOM_RULES = (("LossNotDecreasing", "losses", {"window": "5"}), ("VanishingGradient", "gradients", {}))


def settings(output_path: str | None, custom_rule_image: str | None, rules_source: str | None, arch: str) -> Debugger:
    custom = tuple(CustomRule(name=f"Imgclf{rule}", rule_to_invoke=rule, collection=collection, image=custom_rule_image,
                              source=rules_source, parameters=parameters)
                   for rule, collection, parameters in CUSTOM_RULES) if custom_rule_image else ()
    collections = tuple(replace(c, include_regex=ARCHS[arch].activations) if c.name == "relu_input" else c
                        for c in COLLECTIONS)
    return Debugger(s3_output_path=f"{output_path}/debug" if output_path else None, collections=collections,
                    builtin_rules=BUILTIN_RULES, custom_rules=custom, profiler_rules=PROFILER_RULES)


def rule_config_function(rule: str) -> str:
    """The smdebug_rulesconfig function of a built-in rule: LossNotDecreasing -> loss_not_decreasing."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", rule).lower()
