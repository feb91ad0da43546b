"""SageMaker Debugger's hook, created (and smdebug imported) only when SageMaker's config file asks for it."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

log = logging.getLogger(__name__)

CONFIG_FILE = "debughookconfig.json"


def create_hook(config_dir: Path, model: nn.Module, criterion: nn.Module):
    """The smdebug hook for ``model`` and ``criterion``, or None when the job did not ask for one."""
    config = config_dir / CONFIG_FILE
    if not config.is_file():
        return None
    try:
        import smdebug.pytorch as smd
    except Exception as e:  # a broken smdebug must not cost the user the training job
        log.warning("%s asks for SageMaker Debugger, but smdebug cannot be imported (%s); training without it",
                    config, e)
        return None
    hook = smd.Hook.create_from_json_file(str(config))
    hook.register_module(model)
    hook.register_loss(criterion)
    log.info("SageMaker Debugger hook from %s writes tensors to %s", config, hook.out_dir)
    return hook


def set_mode(hook, train: bool) -> None:
    if hook is not None:
        import smdebug.pytorch as smd

        hook.set_mode(smd.modes.TRAIN if train else smd.modes.EVAL)
