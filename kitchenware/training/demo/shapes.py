"""The six SYNTHETIC kitchenware silhouettes drawn by `kitchenware.training.demo.generator`.

Each class is a recognisable outline drawn with Pillow (cup: body and handle; glass: a
see-through tapered outline; plate: an ellipse with a rim; spoon: handle and oval bowl;
fork: handle and tines; knife: handle and blade), with random proportions, stroke width,
mirroring and rotation. Colours come from one palette shared by every class.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from kitchenware.runtime.metadata import KITCHENWARE_CLASSES

SHAPE_NAMES = KITCHENWARE_CLASSES  # one silhouette per Kaggle label, in this order
_CANVAS = 320  # objects are drawn at this size, then scaled down (cheap anti-aliasing)

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]


def random_colour(rng: np.random.Generator, neutral: float = 0.0) -> RGB:
    """Any hue and brightness; with probability `neutral` a white, grey, steel or black."""
    hue = rng.random()
    saturation = rng.uniform(0.0, 0.15) if rng.random() < neutral else rng.uniform(0.15, 0.9)
    value = rng.uniform(0.15, 1.0)
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def shade(colour: RGB, factor: float) -> RGB:
    """Darker (factor < 1) or lighter (factor > 1) version of a colour."""
    if factor <= 1:
        return (int(colour[0] * factor), int(colour[1] * factor), int(colour[2] * factor))
    mix = factor - 1
    return (
        int(colour[0] + (255 - colour[0]) * mix),
        int(colour[1] + (255 - colour[1]) * mix),
        int(colour[2] + (255 - colour[2]) * mix),
    )


def luminance(colour: Sequence[float]) -> float:
    return 0.299 * float(colour[0]) + 0.587 * float(colour[1]) + 0.114 * float(colour[2])


def _trapezoid(
    cx: float, top: float, top_width: float, bottom: float, bottom_width: float
) -> list[tuple[float, float]]:
    """Corners, clockwise from top left, of a trapezoid centred on x = cx."""
    return [
        (cx - top_width / 2, top),
        (cx + top_width / 2, top),
        (cx + bottom_width / 2, bottom),
        (cx - bottom_width / 2, bottom),
    ]


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
    hr_x, hr_y = s * rng.uniform(0.12, 0.18), (bottom - top) * rng.uniform(0.28, 0.38)
    hy = top + (bottom - top) * rng.uniform(0.4, 0.55)
    handle_width = max(3, int(s * rng.uniform(0.045, 0.08)))
    draw.ellipse(
        (hx - hr_x, hy - hr_y, hx + hr_x, hy + hr_y), outline=line, width=handle_width + stroke
    )
    draw.ellipse((hx - hr_x, hy - hr_y, hx + hr_x, hy + hr_y), outline=fill, width=handle_width)
    body = _trapezoid(cx, top, width, bottom, bottom_width)
    draw.polygon(body, fill=fill, outline=line, width=stroke)
    rim_h = s * rng.uniform(0.04, 0.1)
    draw.ellipse(
        (cx - width / 2, top - rim_h / 2, cx + width / 2, top + rim_h / 2),
        fill=shade(fill, 0.55),
        outline=line,
        width=stroke,
    )
    if rng.random() < 0.35:  # a saucer under some cups
        sw = width * rng.uniform(1.3, 1.6)
        sh = s * rng.uniform(0.05, 0.08)
        draw.ellipse(
            (cx - sw / 2, bottom - sh / 2, cx + sw / 2, bottom + sh / 2),
            fill=shade(fill, 1.2),
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
    body = _trapezoid(cx, top, width, bottom, bottom_width)
    draw.polygon(body, fill=glass_fill)
    if rng.random() < 0.5:  # some liquid in it
        level = top + (bottom - top) * rng.uniform(0.3, 0.7)
        frac = (level - top) / (bottom - top)
        lw = width + (bottom_width - width) * frac
        liquid: RGBA = (*random_colour(rng), int(rng.integers(60, 140)))
        draw.polygon(_trapezoid(cx, level, lw, bottom, bottom_width), fill=liquid)
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
        fill=shade(fill, rng.uniform(0.8, 1.15)),
        outline=shade(line, 1.1),
        width=max(1, stroke // 2),
    )
    if rng.random() < 0.4:  # a decorated rim
        band = (1 + inner) / 2
        bw, bh = width * band, height * band
        draw.ellipse(
            (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2),
            outline=random_colour(rng),
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
        _trapezoid(cx, start, start_w, end, end_w),
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
    return random_colour(rng) if rng.random() < 0.4 else fill


def _draw_spoon(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, fill: RGB, line: RGB, stroke: int
) -> None:
    s = _CANVAS
    cx = s / 2
    bowl_w, bowl_h = s * rng.uniform(0.25, 0.32), s * rng.uniform(0.34, 0.42)
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
        s * rng.uniform(0.035, 0.05),
        s * rng.uniform(0.06, 0.09),
    )
    draw.ellipse(
        (cx - bowl_w / 2, top, cx + bowl_w / 2, top + bowl_h), fill=fill, outline=line, width=stroke
    )
    iw, ih = bowl_w * 0.6, bowl_h * 0.6  # the bowl's hollow
    draw.ellipse(
        (cx - iw / 2, top + bowl_h * 0.15, cx + iw / 2, top + bowl_h * 0.15 + ih),
        fill=shade(fill, rng.uniform(0.7, 0.9)),
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
        _trapezoid(cx, top + tine_len, head_w, head_bottom + s * 0.06, neck_w),
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
    blade_w = s * rng.uniform(0.1, 0.15)
    handle_w = s * rng.uniform(0.09, 0.12)
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
    draw.polygon(blade, fill=shade(fill, rng.uniform(0.9, 1.25)), outline=line, width=stroke)
    if rng.random() < 0.5:  # a bolster between blade and handle
        bw = max(blade_w, handle_w) * 1.1
        draw.rectangle(
            (cx - bw / 2, blade_end - s * 0.015, cx + bw / 2, blade_end + s * 0.015),
            fill=shade(fill, 0.7),
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


def draw_object(label: str, rng: np.random.Generator, fill: RGB) -> Image.Image:
    """The class silhouette on a transparent layer, cropped to its bounds."""
    layer = Image.new("RGBA", (_CANVAS, _CANVAS), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    line = shade(fill, rng.uniform(0.3, 0.7)) if rng.random() < 0.7 else shade(fill, 1.5)
    stroke = int(rng.integers(2, 9))
    _DRAWERS[label](draw, rng, fill, line, stroke)
    if rng.random() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = rng.uniform(-_MAX_TILT[label], _MAX_TILT[label])
    # Bilinear is enough: the layer is scaled down with Lanczos afterwards.
    layer = layer.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    bbox = layer.getbbox()
    return layer.crop(bbox) if bbox else layer
