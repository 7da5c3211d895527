"""What the batch tests share: a colour model, image folders whose right labels are known."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from support.images import image_bytes
from support.service import CLASS_COLOURS, REPO

PREDICT = [sys.executable, str(REPO / "predict.py")]


def colour_of(label: str, shade: int = 0) -> tuple[int, int, int]:
    """A colour the colour model labels `label`; `shade` varies it a little."""
    r, g, b = CLASS_COLOURS[label]
    return (
        int(r * (220 - shade) + 20),
        int(g * (220 - shade) + 20),
        int(b * (220 - shade) + 20),
    )


def write_colour_images(folder: Path, per_class: int, fmt: str = "PNG") -> dict[str, str]:
    """folder/<label>-<n>.png for each class; returns id -> right label."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    suffix = {"PNG": ".png", "JPEG": ".jpg"}[fmt]
    for label in CLASS_COLOURS:
        for index in range(per_class):
            image_id = f"{label}-{index:03d}"
            data = image_bytes(colour_of(label, index % 40), fmt=fmt, size=(40 + index % 7, 30))
            (folder / f"{image_id}{suffix}").write_bytes(data)
            expected[image_id] = label
    return expected


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_predict(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [*PREDICT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
