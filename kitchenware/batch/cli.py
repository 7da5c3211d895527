"""`python predict.py`: score a folder, a glob, a file list or Kaggle's test.csv."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .inputs import InputError, discover
from .local import DECODE_MODES, LocalOptions
from .results import FORMATS, ResumeError
from .run import ENGINES, ModelNotFound, RunOptions, resolve_model_dir, score

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # the output is written; the errors file lists what failed
EXIT_USAGE = 2  # bad arguments, no inputs, no model (argparse uses 2 as well)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict.py",
        description=(
            "Score many images with the kitchenware model and write a Kaggle submission CSV "
            "(Id,label). Rerunning after an interruption resumes where it stopped. Exit code: "
            "0 all scored, 1 some files failed (listed in the errors file), 2 usage error."
        ),
    )
    parser.add_argument(
        "--data",
        required=True,
        help="a folder (recursive; Kaggle's test.csv + images/ layout is recognised), "
        "Kaggle's test.csv, a quoted glob such as 'photos/**/*.jpg', or a text file with "
        "one path per line",
    )
    parser.add_argument("--out", type=Path, default=Path("submission.csv"), help="output file")
    parser.add_argument("--format", choices=FORMATS, default="csv", dest="fmt")
    parser.add_argument(
        "--probabilities", action="store_true", help="add one column per class (or a dict in jsonl)"
    )
    parser.add_argument(
        "--errors", type=Path, help="errors file (default: <out stem>.errors.csv beside --out)"
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-dir", type=Path, help="folder with model.keras + metadata.json")
    model.add_argument(
        "--model-tag", help="BentoML store tag (default: KITCHENWARE_MODEL_TAG, as the service)"
    )
    parser.add_argument(
        "--backend", help="inference backend (default: KITCHENWARE_BACKEND, else auto)"
    )
    parser.add_argument("--engine", choices=ENGINES, default="local")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call")
    parser.add_argument(
        "--decoders", type=int, default=0, help="decoder threads/processes (default: one per core)"
    )
    parser.add_argument("--decode-in", choices=DECODE_MODES, default="threads")
    parser.add_argument("--restart", action="store_true", help="ignore an earlier run's journal")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = parser.add_argument_group("Ray engine (pip install -e '.[ray]')")
    ray.add_argument("--ray-address", help="existing cluster, e.g. ray://head:10001 or auto")
    ray.add_argument(
        "--ray-actors",
        type=int,
        default=0,
        help="model actors (default: (cluster CPUs - 1) / --ray-cpus-per-actor)",
    )
    ray.add_argument(
        "--ray-cpus-per-actor", type=float, default=1.0, help="CPUs reserved per model actor"
    )
    ray.add_argument("--ray-num-cpus", type=int, help="CPUs of a local Ray instance started here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .run import default_backend

    try:
        inputs = discover(args.data)
        model_dir, model_name = resolve_model_dir(args.model_dir, args.model_tag)
    except (InputError, ModelNotFound) as exc:
        print(f"predict.py: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = RunOptions(
        out=args.out,
        fmt=args.fmt,
        probabilities=args.probabilities,
        errors_path=args.errors,
        engine=args.engine,
        backend=args.backend or default_backend(),
        restart=args.restart,
        progress=not args.no_progress,
        local=LocalOptions(
            batch_size=args.batch_size, decoders=args.decoders, decode_in=args.decode_in
        ),
        ray={
            "address": args.ray_address,
            "actors": args.ray_actors,
            "cpus_per_actor": args.ray_cpus_per_actor,
            "num_cpus": args.ray_num_cpus,
            "batch_size": args.batch_size,
        },
    )
    print(
        f"{len(inputs.items)} input(s) ({inputs.layout} layout"
        + (f"; {inputs.skipped} non-image file(s) left out" if inputs.skipped else "")
        + f"); model {model_name}",
        file=sys.stderr,
    )
    try:
        summary = score(inputs, model_dir, model_name, options)
    except ResumeError as exc:
        print(f"predict.py: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for line in summary.lines():
        print(line, file=sys.stderr)
    return EXIT_SOME_FAILED if summary.failures else EXIT_OK
