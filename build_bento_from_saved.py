"""Saved model folder -> BentoML model store -> bento, without training anything.

    python build_bento_from_saved.py                      # import saved_model/, build a bento
    python build_bento_from_saved.py --import-only        # just import (what `make serve` does)
    python build_bento_from_saved.py --model-dir runs/x/export

Importing is idempotent: the same model.keras imported twice is one model in the store.
The last line printed by a build is the bento tag.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=PROJECT_DIR / "saved_model",
        help="folder with model.keras and metadata.json (default: saved_model/)",
    )
    parser.add_argument(
        "--import-only", action="store_true", help="import into the store, do not build a bento"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from kitchenware.core.store import import_model_dir

    try:
        model_tag, created = import_model_dir(args.model_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = "imported into" if created else "already in"
    print(f"model {model_tag} {state} the BentoML store (from {args.model_dir})")
    if args.import_only:
        print("next: bentoml serve service:Kitchenware --port 3000")
        return 0

    # The bento packs the model service.py references: pin it to the one just imported.
    os.environ["KITCHENWARE_MODEL_TAG"] = model_tag
    import bentoml

    bento = bentoml.bentos.build_bentofile(
        str(PROJECT_DIR / "bentofile.yaml"), build_ctx=str(PROJECT_DIR)
    )
    tag = str(bento.tag)
    print(
        f"built bento {tag} with model {model_tag}. Next:\n"
        f"  bentoml serve {tag} --port 3000\n"
        f"  bentoml containerize {tag}   (add --backend podman without a Docker daemon)\n"
        f"  docker run --rm -p 3000:3000 {tag}   (or: podman run --rm -p 3000:3000 {tag})\n"
        f"  make container                 (the same, with podman fallbacks for this project)"
    )
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
