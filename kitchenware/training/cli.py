"""`python train.py`: argparse over TrainConfig, one-line errors, a closing summary.

Options are generated from TrainConfig's fields, so --help always lists every option with
its default. A mistake in the input ends with one `error: <sentence>` line on stderr and
exit code 2, and nothing is saved to the model store.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError

from kitchenware.training.config import TrainConfig
from kitchenware.training.run import TrainResult, train

PACKAGE_DIR = Path(__file__).resolve().parent
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXAMPLES = """\
examples:
  python train.py --data data/demo --backbone mobilenetv3small --image-size 128 --weights none
  python train.py --data kitchenware-data --weights imagenet --fine-tune-epochs 5
  python train.py --data kitchenware-data --weights ~/xception_notop.h5 --flip --zoom 0.1

Real photos need --weights imagenet (or a local file); the demo data trains from scratch.
"""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """`int | None` -> int; other annotations unchanged."""
    if get_origin(annotation) in (types.UnionType, Union):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        return members[0]
    return annotation


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every option; the examples epilog keeps its line breaks."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Never break inside a hyphenated name (`kitchenware-trained`): users copy defaults.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a kitchenware image classifier and save it to the BentoML store.",
        formatter_class=_HelpFormatter,
        epilog=EXAMPLES,
    )
    for name, field in TrainConfig.model_fields.items():
        kind = _base_type(field.annotation)
        options: dict[str, Any] = {"help": field.description, "dest": name}
        if field.is_required():
            options.update(required=True, type=str, metavar="DIR", default=argparse.SUPPRESS)
        elif kind is bool:
            options.update(action=argparse.BooleanOptionalAction, default=field.default)
        elif get_origin(kind) is Literal:
            options.update(choices=get_args(kind), default=field.default)
        else:
            metavar = "DIR" if kind is Path else name.split("_")[-1].upper()
            options.update(type=str, default=field.default, metavar=metavar)
        parser.add_argument(_flag(name), **options)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Validation (types, ranges) happens in TrainConfig, one place for CLI and notebook."""
    values = {name: value for name, value in vars(args).items() if value is not None}
    return TrainConfig.model_validate(values)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def validation_sentence(exc: ValidationError) -> str:
    """The first problem of a pydantic error, phrased for a command line user."""
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if not location:
        return message[0].upper() + message[1:] + "."
    return f"{_flag(location)} {error.get('input')!r} is invalid: {message}."


def _raised_by_this_package(exc: BaseException) -> bool:
    """True when the innermost frame is our code: a user-facing error, not a library bug."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().parent == PACKAGE_DIR


def summary(result: TrainResult) -> str:
    metrics = result.metrics
    lines = [
        "",
        "Training finished.",
        f"  run directory:  {result.run_dir}",
        f"  test accuracy:  {metrics['test_accuracy']:.4f} "
        f"(macro F1 {metrics['test_macro_f1']:.4f}, {metrics['split_sizes']['test']} images)",
    ]
    if result.export_dir is not None:
        lines.append(f"  exported to:    {result.export_dir}")
    if result.tag is not None:
        lines += [f"  model tag:      {result.tag}", f"next: bentoml models get {result.tag}"]
    else:
        lines.append("  model store:    not saved (--no-save-to-store)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        print(f"error: {validation_sentence(exc)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = train(config)
    except ValueError as exc:  # DataError, ModelConfigError, ImageDecodeError are ValueErrors
        if not _raised_by_this_package(exc):
            raise  # a library's ValueError is a bug here: keep its traceback
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted; nothing was saved to the model store.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary(result))
    return 0
