"""The same model served the way a LitServe user would serve it: LitServe's batching (max batch 8,
5 ms wait, as ``serve`` on a CPU), torchvision transforms, the precision and layout ``serve`` uses.
Runs in LitServe's own venv (make bench-peers), not ours:

    build/peers/bin/python bench/litserve_app.py MODEL_DIR PORT bf16

POST /invocations {"image": "<base64 JPEG>"} -> {"probabilities": [...]}; GET /ping.
"""

from __future__ import annotations

import base64
import io
import signal
import sys
from pathlib import Path

import litserve as ls
import torch
from PIL import Image
from torchvision import transforms

from peer_model import DTYPES, load_model

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class ClassifierAPI(ls.LitAPI):
    def __init__(self, model_dir: Path, dtype: torch.dtype):
        super().__init__(max_batch_size=8, batch_timeout=0.005, api_path="/invocations")
        self.model_dir, self.dtype = model_dir, dtype

    def setup(self, device: str) -> None:
        model, spec = load_model(self.model_dir)
        self.model = model.to(device, dtype=self.dtype, memory_format=torch.channels_last)
        self.device = device
        size = spec["image_size"]
        self.transform = transforms.Compose([transforms.Resize(round(size / 0.875)), transforms.CenterCrop(size),
                                             transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def decode_request(self, request: dict) -> torch.Tensor:
        return self.transform(Image.open(io.BytesIO(base64.b64decode(request["image"]))).convert("RGB"))

    def predict(self, batch: torch.Tensor) -> list:
        with torch.inference_mode():
            inputs = batch.to(self.device, dtype=self.dtype).contiguous(memory_format=torch.channels_last)
            return self.model(inputs).float().softmax(1).tolist()

    def encode_response(self, output: list) -> dict:
        return {"probabilities": output}


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # LitServer stops its workers on KeyboardInterrupt only
    api = ClassifierAPI(Path(sys.argv[1]), DTYPES[sys.argv[3]])
    ls.LitServer(api, accelerator="auto", healthcheck_path="/ping").run(host="127.0.0.1", port=int(sys.argv[2]), num_api_servers=1,
                                                                     generate_client_file=False)
