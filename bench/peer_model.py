"""The bench model rebuilt with torch and torchvision alone, for the peer servers' own venvs (no imgclf there)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torchvision import models

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_model(model_dir: Path) -> tuple[nn.Module, dict]:
    """The model in ``model_dir`` (model.json, model.pt) on the CPU in eval mode, and its model.json."""
    spec = json.loads((model_dir / "model.json").read_text())
    model = models.get_model(spec["arch"], weights=None)
    model.fc = nn.Linear(model.fc.in_features, spec["num_classes"])
    model.load_state_dict(torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True))
    return model.eval(), spec
