"""The strong peer: what a user would write instead, LitServe with its own dynamic batching.

The same OpenVINO IR (loaded through kitchenware.runtime.backends, so compiled exactly as the
service compiles it) and the same preprocessing (`preprocess_bytes`: JPEG draft decode and
resize); only the serving differs. None of the service's checks, ids or feedback. For the
benchmark only; not part of the package.

    python bench/litserve_peer.py --model-dir DIR --backend openvino-bf16 --port 9697
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from fastapi import Request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kitchenware.runtime.preprocessing import preprocess_bytes

MAX_BATCH_SIZE = 32  # as the service's max_batch_size
BATCH_TIMEOUT_S = 0.005  # how long LitServe waits to fill a batch


class KitchenwareAPI(ls.LitAPI):
    def __init__(self, model_dir: Path, backend: str) -> None:
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
        self.model_dir, self.backend_name = model_dir, backend

    def setup(self, device: str) -> None:
        from kitchenware.runtime.backends import load_backend

        self.model = load_backend(self.model_dir, self.backend_name, allow_failed_gate=True)
        self.model.warm_up()
        self.size = self.model.image_size
        self.class_names = self.model.metadata.class_names

    # Annotated with the Request class itself (no `from __future__ import annotations` here):
    # LitServe reads the annotation to pass the parsed form instead of parsing JSON.
    def decode_request(self, request: Request) -> np.ndarray:
        form: Any = request
        return preprocess_bytes(form["image"].file.read(), self.size)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.model.predict_arrays(batch)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, probabilities: np.ndarray) -> dict[str, Any]:
        best = int(probabilities.argmax())
        return {
            "label": self.class_names[best],
            "confidence": float(probabilities[best]),
            "probabilities": dict(zip(self.class_names, map(float, probabilities), strict=True)),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--port", type=int, default=9697)
    args = parser.parse_args(argv)
    server = ls.LitServer(
        KitchenwareAPI(args.model_dir, args.backend),
        accelerator="cpu",
        workers_per_device=1,
        timeout=120,  # as the load generator's request timeout
    )
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
