"""OpenVINO's compiled-model cache: used where writable, skipped (not fatal) where not;
seeded from the image's build on the same CPU kind only.

The container's root (and HOME) may be read-only: the service must start without a cache.
Real compile_model calls on the colour model's IR, in subprocesses with their own env.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.service import build_colour_model

from kitchenware.modelbuild.conversion import ImageSet, build_runtime_artifacts
from kitchenware.runtime.openvino_backend import ENV_CACHE_SEED, seed_cache

SIZE = 32
PROBE = (
    "import json, sys\n"
    "from kitchenware.runtime.openvino_backend import model_cache_dir\n"
    "from kitchenware.runtime.backends import load_backend\n"
    "b = load_backend(sys.argv[1], 'openvino-fp32')\n"
    "print(json.dumps({'cache': str(model_cache_dir()), 'backend': b.name}))\n"
)
FROM_CACHE = (
    "import json, sys\n"
    "from kitchenware.runtime.backends import load_backend\n"
    "b = load_backend(sys.argv[1], 'openvino-fp32')\n"
    "print(json.dumps({'from_cache': bool(b.compiled.get_property('LOADED_FROM_CACHE'))}))\n"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = build_colour_model(tmp_path_factory.mktemp("cache") / "model", image_size=SIZE)
    images = np.random.default_rng(0).uniform(0, 255, (8, SIZE, SIZE, 3)).astype(np.float32)
    build_runtime_artifacts(
        directory, ImageSet(images), ImageSet(images), backends=("openvino-fp32",), log=print
    )
    return directory


def probe(model_dir: Path, script: str = PROBE, **env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KITCHENWARE_")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(model_dir)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_cache_fills_where_it_is_writable(model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "ov-cache"
    assert probe(model_dir, KITCHENWARE_OPENVINO_CACHE_DIR=str(cache))["cache"] == str(cache)
    assert list(cache.glob("*.blob")), "compile_model wrote no cached blob"


def test_an_unwritable_home_falls_back_to_the_temp_folder(model_dir: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("HOME cannot hold folders here")  # mkdir under it fails, even as root
    temp = tmp_path / "tmp"
    temp.mkdir()
    found = probe(model_dir, HOME=str(not_a_dir), XDG_CACHE_HOME="", TMPDIR=str(temp))
    assert found == {"cache": str(temp / "kitchenware-openvino-cache"), "backend": "openvino-fp32"}


def test_no_writable_place_serves_without_a_cache(model_dir: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    found = probe(model_dir, KITCHENWARE_OPENVINO_CACHE_DIR=str(not_a_dir / "cache"))
    assert found == {"cache": "None", "backend": "openvino-fp32"}


def test_a_seed_from_the_image_build_skips_the_compile_on_the_same_cpu_kind_only(
    model_dir: Path, tmp_path: Path
) -> None:
    """What Dockerfile.openvino.j2 runs at build; the container's cache starts empty."""
    seed = tmp_path / "seed"
    (folder,) = seed_cache(model_dir, seed)
    for name in ("plain", "seeded"):
        cache = tmp_path / name
        env = {"KITCHENWARE_OPENVINO_CACHE_DIR": str(cache)}
        if name == "seeded":
            env[ENV_CACHE_SEED] = str(seed)
        loaded = probe(model_dir, FROM_CACHE, **env)
        assert loaded == {"from_cache": name == "seeded"}, name
    folder.parent.rename(seed / "another-cpu-kind")  # a blob is not portable across CPUs
    cache = tmp_path / "other-cpu"
    loaded = probe(model_dir, FROM_CACHE, KITCHENWARE_OPENVINO_CACHE_DIR=str(cache), **{
        ENV_CACHE_SEED: str(seed)
    })  # fmt: skip
    assert loaded == {"from_cache": False}
