"""The baselines: training and serving written the usual way (ImageFolder + PIL transforms, fp32,
one request at a time).

Training (train_model.py / hpo.py style): torchvision ImageFolder with PIL transforms run every
epoch, a default DataLoader, fp32, one plain optimizer step per batch.
Serving (inference.py style): a model_fn/input_fn/predict_fn handler behind a server that takes
one request at a time: PIL decode, fp32, batch of one.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import torch
from flask import Flask, Response, request
from PIL import Image
from torch import nn
from torchvision import datasets, models, transforms

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def train_baseline(data: Path, arch: str, image_size: int, epochs: int, batch_size: int, device: torch.device) -> float:
    """Returns images/s over the whole run."""
    transform = transforms.Compose([
        transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(MEAN, STD),
    ])
    dataset = datasets.ImageFolder(str(data), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    model = models.get_model(arch, weights=None)
    model.fc = nn.Linear(model.fc.in_features, len(dataset.classes))
    model = model.to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        model.train()
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            optimizer.step()
            seen += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


# --- serving, as inference.py did it -------------------------------------------------------

def model_fn(model_dir: str) -> nn.Module:
    spec = json.loads((Path(model_dir) / "model.json").read_text())
    model = models.get_model(spec["arch"], weights=None)
    model.fc = nn.Linear(model.fc.in_features, spec["num_classes"])
    model.load_state_dict(torch.load(Path(model_dir) / "model.pt", map_location="cpu", weights_only=True))
    model.image_size = spec["image_size"]
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval()


def input_fn(body: bytes, image_size: int) -> torch.Tensor:
    image = Image.open(io.BytesIO(body)).convert("RGB")
    transform = transforms.Compose([
        transforms.Resize(round(image_size / 0.875)), transforms.CenterCrop(image_size),
        transforms.ToTensor(), transforms.Normalize(MEAN, STD),
    ])
    return transform(image).unsqueeze(0)


def predict_fn(data: torch.Tensor, model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(data.to(next(model.parameters()).device))


def baseline_app(model_dir: str) -> Flask:
    app = Flask(__name__)
    model = model_fn(model_dir)

    @app.get("/ping")
    def ping() -> Response:
        return Response(status=200)

    @app.post("/invocations")
    def invocations() -> Response:
        output = predict_fn(input_fn(request.get_data(), model.image_size), model)
        return Response(json.dumps(output.softmax(1).tolist()), mimetype="application/json")

    return app


if __name__ == "__main__":  # python bench/baseline.py MODEL_DIR PORT: one request at a time
    import sys

    baseline_app(sys.argv[1]).run(host="127.0.0.1", port=int(sys.argv[2]), threaded=False)
