"""The naive peer: a plain Flask app calling `model.predict` once per request.

This is what most kitchenware/food classifier projects ship (load a Keras model, decode
the upload, `model.predict`, return JSON), served by Flask's threaded server. It uses
kitchenware.runtime.preprocessing so both servers do the same decoding work; only the serving
differs. For the benchmark only; not part of the package.

    python bench/naive_flask_server.py --model-dir bench/out/model-xception-299 --port 9696
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Flask, jsonify, request

from kitchenware.runtime.metadata import MODEL_FILENAME, read_metadata
from kitchenware.runtime.preprocessing import ImageDecodeError, preprocess_bytes


def create_app(model_dir: Path) -> Flask:
    import keras
    import numpy as np

    metadata = read_metadata(model_dir)
    model = keras.models.load_model(model_dir / MODEL_FILENAME, compile=False)
    size = metadata.image_size
    model.predict(np.zeros((1, size, size, 3), dtype=np.float32), verbose=0)  # warm up
    app = Flask("naive_kitchenware")

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    @app.post("/predict")
    def predict() -> Any:
        upload = request.files.get("image")
        if upload is None:
            return jsonify(error="Send the image in the multipart field 'image'."), 400
        try:
            array = preprocess_bytes(upload.read(), size, name=upload.filename or "image")
        except ImageDecodeError as exc:
            return jsonify(error=str(exc)), exc.status_code
        probabilities = model.predict(array[None], verbose=0)[0]  # one call per request
        best = int(probabilities.argmax())
        return jsonify(
            label=metadata.class_names[best],
            confidence=float(probabilities[best]),
            probabilities=dict(zip(metadata.class_names, map(float, probabilities), strict=True)),
        )

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9696)
    args = parser.parse_args(argv)
    app = create_app(args.model_dir)
    app.run(host=args.host, port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
