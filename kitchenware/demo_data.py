"""SYNTHETIC six-class kitchenware images, for tests and the demo model, not real photos.

Real photos (the Kaggle "Kitchenware Classification" data) cannot be downloaded on the
machines this project is built on, so this module draws a stand-in: one silhouette per
class (cup, glass, plate, spoon, fork, knife) with random colour, background, rotation,
scale, position, aspect, stroke width, distractor shapes, noise, blur and JPEG quality.
Colours and backgrounds are drawn from the same distributions for every class, so only
the shape tells the classes apart. Models trained on it are demos, not kitchenware models.

    python -m kitchenware.demo_data data/demo --per-class 120 --seed 0
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

DEMO_CLASSES = ("cup", "glass", "plate", "spoon", "fork", "knife")
LAYOUTS = ("kaggle", "folders")
MARKER_FILENAME = "SYNTHETIC_DATA.txt"  # marks a directory this generator may overwrite
_CANVAS = 320  # objects are drawn at this size, then scaled down (cheap anti-aliasing)

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]


def _random_colour(rng: np.random.Generator) -> RGB:
    """Any hue, mid-to-high saturation and value spread: the same for every class."""
    hue = rng.random()
    saturation = rng.uniform(0.0, 0.9)
    value = rng.uniform(0.15, 1.0)
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def _shade(colour: RGB, factor: float) -> RGB:
    """Darker (factor < 1) or lighter (factor > 1) version of a colour."""
    if factor <= 1:
        return (int(colour[0] * factor), int(colour[1] * factor), int(colour[2] * factor))
    mix = factor - 1
    return (
        int(colour[0] + (255 - colour[0]) * mix),
        int(colour[1] + (255 - colour[1]) * mix),
        int(colour[2] + (255 - colour[2]) * mix),
    )


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True)))


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Flat, gradient or textured (smooth noise, stripes) background as float RGB."""
    base = np.array(_random_colour(rng), dtype=np.float32)
    kind = rng.choice(["flat", "gradient", "noise", "stripes"])
    if kind == "flat":
        return np.broadcast_to(base, (height, width, 3)).copy()
    if kind == "gradient":
        other = np.array(_random_colour(rng), dtype=np.float32)
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
    other = np.array(_random_colour(rng), dtype=np.float32)
    period = rng.uniform(10, 40)
    angle = rng.uniform(0, math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
    t = (np.sin(phase * 2 * math.pi) > rng.uniform(-0.5, 0.5)).astype(np.float32)
    strength = rng.uniform(0.1, 0.3)  # a tablecloth pattern, muted so the object stands out
    return base + (other - base) * (t * strength)[..., None]


def _draw_cup(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, fill: RGB, line: RGB, stroke: int
) -> None:
    s = _CANVAS
    cx = s * 0.45
    top, bottom = s * rng.uniform(0.18, 0.28), s * rng.uniform(0.72, 0.85)
    width = s * rng.uniform(0.42, 0.58)
    bottom_width = width * rng.uniform(0.65, 0.95)
    # Handle first: the body then hides its inner half, leaving a ring on the side.
    hx = cx + (width + bottom_width) / 4
    hr_x, hr_y = s * rng.uniform(0.1, 0.17), (bottom - top) * rng.uniform(0.25, 0.38)
    hy = top + (bottom - top) * rng.uniform(0.4, 0.55)
    handle_width = max(3, int(s * rng.uniform(0.035, 0.07)))
    draw.ellipse(
        (hx - hr_x, hy - hr_y, hx + hr_x, hy + hr_y), outline=line, width=handle_width + stroke
    )
    draw.ellipse((hx - hr_x, hy - hr_y, hx + hr_x, hy + hr_y), outline=fill, width=handle_width)
    body = [
        (cx - width / 2, top),
        (cx + width / 2, top),
        (cx + bottom_width / 2, bottom),
        (cx - bottom_width / 2, bottom),
    ]
    draw.polygon(body, fill=fill, outline=line, width=stroke)
    rim_h = s * rng.uniform(0.04, 0.1)
    draw.ellipse(
        (cx - width / 2, top - rim_h / 2, cx + width / 2, top + rim_h / 2),
        fill=_shade(fill, 0.55),
        outline=line,
        width=stroke,
    )
    if rng.random() < 0.35:  # a saucer under some cups
        sw = width * rng.uniform(1.3, 1.6)
        sh = s * rng.uniform(0.05, 0.08)
        draw.ellipse(
            (cx - sw / 2, bottom - sh / 2, cx + sw / 2, bottom + sh / 2),
            fill=_shade(fill, 1.2),
            outline=line,
            width=stroke,
        )


def _draw_glass(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, fill: RGB, line: RGB, stroke: int
) -> None:
    s = _CANVAS
    cx = s / 2
    alpha = int(rng.integers(40, 110))  # see-through: the background shows inside
    glass_fill: RGBA = (*fill, alpha)
    top = s * rng.uniform(0.05, 0.12)
    if rng.random() < 0.3:  # a wine glass: bowl, stem, foot
        bowl_w, bowl_bottom = s * rng.uniform(0.3, 0.42), s * rng.uniform(0.45, 0.55)
        draw.chord(
            (cx - bowl_w / 2, top - (bowl_bottom - top), cx + bowl_w / 2, bowl_bottom),
            0,
            180,
            fill=glass_fill,
            outline=line,
            width=stroke,
        )
        foot_y = s * rng.uniform(0.85, 0.93)
        draw.line((cx, bowl_bottom, cx, foot_y), fill=line, width=max(stroke, 4))
        foot_w, foot_h = bowl_w * rng.uniform(0.6, 0.9), s * 0.04
        draw.ellipse(
            (cx - foot_w / 2, foot_y - foot_h / 2, cx + foot_w / 2, foot_y + foot_h / 2),
            fill=glass_fill,
            outline=line,
            width=stroke,
        )
        draw.ellipse(
            (cx - bowl_w / 2, top - s * 0.03, cx + bowl_w / 2, top + s * 0.03),
            outline=line,
            width=stroke,
        )
        return
    bottom = s * rng.uniform(0.85, 0.95)
    width = s * rng.uniform(0.3, 0.45)
    bottom_width = width * rng.uniform(0.6, 0.9)
    body = [
        (cx - width / 2, top),
        (cx + width / 2, top),
        (cx + bottom_width / 2, bottom),
        (cx - bottom_width / 2, bottom),
    ]
    draw.polygon(body, fill=glass_fill)
    if rng.random() < 0.5:  # some liquid in it
        level = top + (bottom - top) * rng.uniform(0.3, 0.7)
        frac = (level - top) / (bottom - top)
        lw = width + (bottom_width - width) * frac
        liquid: RGBA = (*_random_colour(rng), int(rng.integers(60, 140)))
        draw.polygon(
            [
                (cx - lw / 2, level),
                (cx + lw / 2, level),
                (cx + bottom_width / 2, bottom),
                (cx - bottom_width / 2, bottom),
            ],
            fill=liquid,
        )
    draw.line([*body, body[0]], fill=line, width=stroke, joint="curve")
    draw.ellipse(
        (cx - width / 2, top - s * 0.03, cx + width / 2, top + s * 0.03), outline=line, width=stroke
    )
    hx = cx - width * rng.uniform(0.15, 0.3)  # a highlight streak
    draw.line(
        (hx, top + s * 0.08, hx - (width - bottom_width) * 0.2, bottom - s * 0.1),
        fill=(255, 255, 255, 150),
        width=max(2, stroke),
    )


def _draw_plate(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, fill: RGB, line: RGB, stroke: int
) -> None:
    s = _CANVAS
    cx = cy = s / 2
    width = s * rng.uniform(0.85, 0.95)
    height = width * rng.uniform(0.45, 1.0)  # seen from above or at an angle
    draw.ellipse(
        (cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2),
        fill=fill,
        outline=line,
        width=stroke,
    )
    inner = rng.uniform(0.55, 0.75)
    iw, ih = width * inner, height * inner
    draw.ellipse(
        (cx - iw / 2, cy - ih / 2, cx + iw / 2, cy + ih / 2),
        fill=_shade(fill, rng.uniform(0.8, 1.15)),
        outline=_shade(line, 1.1),
        width=max(1, stroke // 2),
    )
    if rng.random() < 0.4:  # a decorated rim
        band = (1 + inner) / 2
        bw, bh = width * band, height * band
        draw.ellipse(
            (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2),
            outline=_random_colour(rng),
            width=max(2, stroke),
        )


def _draw_handle(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    colour: RGB,
    line: RGB,
    stroke: int,
    start: float,
    end: float,
    start_w: float,
    end_w: float,
) -> None:
    """A tapered, round-ended handle along the vertical axis from y=start to y=end."""
    cx = _CANVAS / 2
    draw.polygon(
        [
            (cx - start_w / 2, start),
            (cx + start_w / 2, start),
            (cx + end_w / 2, end),
            (cx - end_w / 2, end),
        ],
        fill=colour,
        outline=line,
        width=stroke,
    )
    draw.ellipse(
        (cx - end_w / 2, end - end_w / 2, cx + end_w / 2, end + end_w / 2),
        fill=colour,
        outline=line,
        width=stroke,
    )


def _handle_colour(rng: np.random.Generator, fill: RGB) -> RGB:
    return _random_colour(rng) if rng.random() < 0.4 else fill


def _draw_spoon(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, fill: RGB, line: RGB, stroke: int
) -> None:
    s = _CANVAS
    cx = s / 2
    bowl_w, bowl_h = s * rng.uniform(0.2, 0.28), s * rng.uniform(0.3, 0.38)
    top = s * 0.04
    end = s * rng.uniform(0.88, 0.95)
    _draw_handle(
        draw,
        rng,
        _handle_colour(rng, fill),
        line,
        stroke,
        top + bowl_h * 0.8,
        end,
        s * rng.uniform(0.04, 0.06),
        s * rng.uniform(0.07, 0.11),
    )
    draw.ellipse(
        (cx - bowl_w / 2, top, cx + bowl_w / 2, top + bowl_h), fill=fill, outline=line, width=stroke
    )
    iw, ih = bowl_w * 0.6, bowl_h * 0.6  # the bowl's hollow
    draw.ellipse(
        (cx - iw / 2, top + bowl_h * 0.15, cx + iw / 2, top + bowl_h * 0.15 + ih),
        fill=_shade(fill, rng.uniform(0.7, 0.9)),
    )


def _draw_fork(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, fill: RGB, line: RGB, stroke: int
) -> None:
    s = _CANVAS
    cx = s / 2
    tines = int(rng.choice([3, 4, 4]))
    head_w = s * rng.uniform(0.2, 0.28)
    top = s * 0.04
    tine_len = s * rng.uniform(0.2, 0.28)
    head_bottom = top + tine_len + s * rng.uniform(0.05, 0.08)
    end = s * rng.uniform(0.88, 0.95)
    neck_w = s * rng.uniform(0.045, 0.06)
    _draw_handle(
        draw,
        rng,
        _handle_colour(rng, fill),
        line,
        stroke,
        head_bottom + s * 0.05,
        end,
        neck_w,
        s * rng.uniform(0.06, 0.1),
    )
    # Head: a trapezoid narrowing into the neck, then the tines above it.
    draw.polygon(
        [
            (cx - head_w / 2, top + tine_len),
            (cx + head_w / 2, top + tine_len),
            (cx + neck_w / 2, head_bottom + s * 0.06),
            (cx - neck_w / 2, head_bottom + s * 0.06),
        ],
        fill=fill,
        outline=line,
        width=stroke,
    )
    tine_w = head_w / (2 * tines - 1) * rng.uniform(0.9, 1.2)
    for i in range(tines):
        x = cx - head_w / 2 + i * (head_w - tine_w) / (tines - 1)
        draw.rectangle(
            (x, top, x + tine_w, top + tine_len + 2),
            fill=fill,
            outline=line,
            width=max(1, stroke // 2),
        )


def _draw_knife(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, fill: RGB, line: RGB, stroke: int
) -> None:
    s = _CANVAS
    cx = s / 2
    top = s * 0.04
    blade_end = s * rng.uniform(0.5, 0.6)
    blade_w = s * rng.uniform(0.09, 0.14)
    handle_w = s * rng.uniform(0.08, 0.11)
    end = s * rng.uniform(0.9, 0.95)
    _draw_handle(
        draw,
        rng,
        _handle_colour(rng, fill),
        line,
        stroke,
        blade_end,
        end,
        handle_w,
        handle_w * rng.uniform(0.9, 1.2),
    )
    back = cx + blade_w / 2  # straight spine on one side, curved edge to the tip on the other
    tip_y = top + blade_w * rng.uniform(0.3, 1.2)
    edge = [(cx - blade_w / 2, blade_end)]
    for t in np.linspace(0.0, 1.0, 8):
        y = blade_end - (blade_end - tip_y) * t
        x = cx - blade_w / 2 + blade_w * (t**3)
        edge.append((x, y))
    blade = [(back, blade_end), (back, top), *reversed(edge)]
    draw.polygon(blade, fill=_shade(fill, rng.uniform(0.9, 1.25)), outline=line, width=stroke)
    if rng.random() < 0.5:  # a bolster between blade and handle
        bw = max(blade_w, handle_w) * 1.1
        draw.rectangle(
            (cx - bw / 2, blade_end - s * 0.015, cx + bw / 2, blade_end + s * 0.015),
            fill=_shade(fill, 0.7),
            outline=line,
            width=max(1, stroke // 2),
        )


_DRAWERS: dict[str, Callable[..., None]] = {
    "cup": _draw_cup,
    "glass": _draw_glass,
    "plate": _draw_plate,
    "spoon": _draw_spoon,
    "fork": _draw_fork,
    "knife": _draw_knife,
}
# Cups and glasses stand upright (small tilt); plates and cutlery lie at any angle.
_MAX_TILT = {
    "cup": 25.0,
    "glass": 20.0,
    "plate": 180.0,
    "spoon": 180.0,
    "fork": 180.0,
    "knife": 180.0,
}


def _object_layer(label: str, rng: np.random.Generator, fill: RGB) -> Image.Image:
    """The class silhouette on a transparent layer, cropped to its bounds."""
    layer = Image.new("RGBA", (_CANVAS, _CANVAS), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    line = _shade(fill, rng.uniform(0.3, 0.7)) if rng.random() < 0.7 else _shade(fill, 1.5)
    stroke = int(rng.integers(2, 9))
    _DRAWERS[label](draw, rng, fill, line, stroke)
    if rng.random() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = rng.uniform(-_MAX_TILT[label], _MAX_TILT[label])
    # Bilinear is enough: the layer is scaled down with Lanczos afterwards.
    layer = layer.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    bbox = layer.getbbox()
    return layer.crop(bbox) if bbox else layer


def _distractor(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int
) -> None:
    """A small unrelated shape (crumb, napkin corner, coin) somewhere in the picture."""
    size = min(width, height) * rng.uniform(0.03, 0.12)
    x, y = rng.uniform(0, width), rng.uniform(0, height)
    colour = _random_colour(rng)
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
    fill = _random_colour(rng)
    for _ in range(20):  # keep the object visible against the background
        if _distance(fill, mean_bg) > 110:
            break
        fill = _random_colour(rng)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8)).convert("RGBA")
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.3 else 0):
        _distractor(draw, rng, width, height)

    obj = _object_layer(label, rng, fill)
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
    sigma = rng.uniform(0, 6)
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
        "SYNTHETIC images drawn by kitchenware.demo_data (for tests and the demo model); "
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
        prog="python -m kitchenware.demo_data",
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
