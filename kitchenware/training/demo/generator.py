"""SYNTHETIC six-class kitchenware images, for tests and the demo model, not real photos.

Real photos (the Kaggle "Kitchenware Classification" data) cannot be downloaded on the
machines this project is built on, so this module draws a stand-in: one silhouette per
class (cup, glass, plate, spoon, fork, knife) with random colour, background, rotation,
scale, position, aspect, stroke width, distractor shapes, noise, blur and JPEG quality.
Colours and backgrounds are drawn from the same distributions for every class, so only
the shape tells the classes apart. Models trained on it are demos, not kitchenware models.

    python -m kitchenware.training.demo.generator data/demo --per-class 120 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from kitchenware.training.demo.shapes import SHAPE_NAMES, draw_object, luminance, random_colour

DEMO_CLASSES = SHAPE_NAMES
LAYOUTS = ("kaggle", "folders")
MARKER_FILENAME = "SYNTHETIC_DATA.txt"  # marks a directory this generator may overwrite


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Flat, gradient or textured (smooth noise, stripes) background as float RGB."""
    # Mostly muted surfaces (tables, counters, cloths), as behind real kitchenware photos.
    base = np.array(random_colour(rng, neutral=0.6), dtype=np.float32)
    kind = rng.choice(["flat", "gradient", "noise", "stripes"], p=[0.35, 0.35, 0.2, 0.1])
    if kind == "flat":
        return np.broadcast_to(base, (height, width, 3)).copy()
    if kind == "gradient":
        other = np.array(random_colour(rng), dtype=np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xs / width * math.cos(angle) + ys / height * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return base + (other - base) * t[..., None]
    if kind == "noise":
        cells = int(rng.integers(3, 12))
        coarse = rng.normal(0, rng.uniform(10, 30), size=(cells, cells, 3)).astype(np.float32)
        field = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8))
        smooth = np.asarray(field.resize((width, height), Image.Resampling.BICUBIC), np.float32)
        return np.clip(base + smooth - 128, 0, 255)
    other = np.array(random_colour(rng), dtype=np.float32)
    period = rng.uniform(10, 40)
    angle = rng.uniform(0, math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
    t = (np.sin(phase * 2 * math.pi) > rng.uniform(-0.5, 0.5)).astype(np.float32)
    strength = rng.uniform(0.1, 0.3)  # a tablecloth pattern, muted so the object stands out
    return base + (other - base) * (t * strength)[..., None]


def _distractor(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int
) -> None:
    """A small unrelated shape (crumb, napkin corner, coin) somewhere in the picture."""
    size = min(width, height) * rng.uniform(0.03, 0.12)
    x, y = rng.uniform(0, width), rng.uniform(0, height)
    colour = random_colour(rng)
    kind = rng.integers(0, 3)
    if kind == 0:
        draw.ellipse((x, y, x + size, y + size * rng.uniform(0.5, 1.5)), fill=colour)
    elif kind == 1:
        draw.rectangle((x, y, x + size * rng.uniform(0.5, 2), y + size), fill=colour)
    else:
        draw.polygon(
            [
                (x, y),
                (x + size, y + size * rng.uniform(-0.5, 0.5)),
                (x + size * rng.uniform(0, 1), y + size),
            ],
            fill=colour,
        )


def render_image(
    label: str, rng: np.random.Generator, size_range: tuple[int, int] = (160, 420)
) -> Image.Image:
    """One synthetic RGB picture of `label` (one of DEMO_CLASSES)."""
    low, high = size_range
    width = int(rng.integers(low, high + 1))
    # Photo-like aspect ratios (3:4 to 4:3), not arbitrary strips.
    height = int(np.clip(width * math.exp(rng.uniform(-0.29, 0.29)), low, high))
    background = _background(rng, width, height)
    mean_bg = background.reshape(-1, 3).mean(axis=0)
    # Half the objects are neutral (steel, white, black), as real cutlery and plates often are;
    # the same palette for every class, so colour alone never gives the class away.
    fill = random_colour(rng, neutral=0.5)
    for _ in range(30):  # keep the object's outline visible against the background
        if abs(luminance(fill) - luminance(mean_bg)) > 55:
            break
        fill = random_colour(rng, neutral=0.5)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8)).convert("RGBA")
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.25 else 0):
        _distractor(draw, rng, width, height)

    obj = draw_object(label, rng, fill)
    thin = label in ("spoon", "fork", "knife")  # thin objects need more length to stay legible
    target = min(width, height) * rng.uniform(0.8 if thin else 0.65, 0.97)  # object's long side
    stretch = rng.uniform(0.85, 1.15)  # aspect jitter
    scale = target / max(obj.size)
    size = (max(4, int(obj.width * scale * stretch)), max(4, int(obj.height * scale / stretch)))
    size = (min(size[0], width), min(size[1], height))
    obj = obj.resize(size, Image.Resampling.LANCZOS)
    x = int(rng.integers(0, width - size[0] + 1))
    y = int(rng.integers(0, height - size[1] + 1))
    if rng.random() < 0.4:  # a soft drop shadow
        shadow = Image.new("RGBA", obj.size, (0, 0, 0, 0))
        shadow.putalpha(obj.getchannel("A").point(lambda a: int(a * 0.35)))
        shadow = shadow.filter(ImageFilter.GaussianBlur(rng.uniform(2, 6)))
        dx, dy = (int(v) for v in rng.integers(-8, 9, size=2))
        canvas.alpha_composite(
            shadow,
            (min(max(0, x + dx), width - obj.width), min(max(0, y + dy), height - obj.height)),
        )
    canvas.alpha_composite(obj, (x, y))

    pixels = np.asarray(canvas.convert("RGB"), dtype=np.float32)
    sigma = rng.uniform(0, 5)
    if sigma > 1:
        pixels = pixels + rng.normal(0, sigma, size=pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    return image


def _prepare_output(out_dir: Path) -> None:
    """Create `out_dir`, or clear a previous run of this generator; never touch other data."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a directory.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / MARKER_FILENAME).is_file():
            raise ValueError(
                f"{out_dir} is not empty and was not written by this generator "
                f"(no {MARKER_FILENAME}); choose an empty or new directory."
            )
        for name in ("images", *DEMO_CLASSES):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        (out_dir / "train.csv").unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def generate_demo_dataset(
    out_dir: Path,
    *,
    per_class: int = 100,
    seed: int = 0,
    layout: str = "kaggle",
    size_range: tuple[int, int] = (160, 420),
    progress: bool = True,
) -> Path:
    """Write a SYNTHETIC six-class image set to `out_dir` and return `out_dir`.

    Kaggle layout: train.csv (Id,label) + images/<Id>.jpg. Folders layout:
    <class>/<Id>.jpg. The same seed gives byte-identical files.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
    if per_class < 1:
        raise ValueError(f"--per-class must be at least 1, got {per_class}.")
    low, high = size_range
    if not 32 <= low <= high <= 4096:
        raise ValueError(f"--size-range must satisfy 32 <= MIN <= MAX <= 4096, got {low} {high}.")
    out_dir = Path(out_dir)
    _prepare_output(out_dir)
    (out_dir / MARKER_FILENAME).write_text(
        "SYNTHETIC images drawn by kitchenware.training.demo (for tests and the demo model); "
        f"not real photos. seed={seed} per_class={per_class} layout={layout}\n"
    )
    labels = [label for label in DEMO_CLASSES for _ in range(per_class)]
    order = np.random.default_rng([seed, 7919]).permutation(len(labels))  # Ids not class-sorted
    digits = max(4, len(str(len(labels) - 1)))
    rows: list[tuple[str, str]] = []
    for number, index in enumerate(
        tqdm(order, desc="Drawing synthetic images", unit="img", disable=not progress)
    ):
        label = labels[index]
        image_id = f"{number:0{digits}d}"
        # One generator per image, keyed by (seed, class, index): order-independent, reproducible.
        rng = np.random.default_rng([seed, DEMO_CLASSES.index(label), int(index)])
        image = render_image(label, rng, (low, high))
        folder = out_dir / ("images" if layout == "kaggle" else label)
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{image_id}.jpg", format="JPEG", quality=int(rng.integers(40, 96)))
        rows.append((image_id, label))
    if layout == "kaggle":
        with (out_dir / "train.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Id", "label"])
            writer.writerows(rows)
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kitchenware.training.demo.generator",
        description=(
            "Draw a SYNTHETIC six-class kitchenware-like image set (cup, glass, plate, spoon, "
            "fork, knife) for tests and the demo model. These are generated drawings, not "
            "real photos."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="output directory (new, empty, or a previous run)")
    parser.add_argument("--per-class", type=int, default=100, help="images per class")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="kaggle",
        help="kaggle: train.csv + images/<Id>.jpg; folders: <class>/<Id>.jpg",
    )
    parser.add_argument(
        "--size-range",
        type=int,
        nargs=2,
        default=(160, 420),
        metavar=("MIN", "MAX"),
        help="image width and height range in pixels",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        generate_demo_dataset(
            args.out,
            per_class=args.per_class,
            seed=args.seed,
            layout=args.layout,
            size_range=tuple(args.size_range),
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    total = args.per_class * len(DEMO_CLASSES)
    print(
        f"Wrote {total} synthetic images ({len(DEMO_CLASSES)} classes x {args.per_class}) "
        f"to {args.out} in {args.layout} layout in {time.perf_counter() - started:.1f} s."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
