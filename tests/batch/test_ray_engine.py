"""The Ray Data engine on a local Ray instance (ray.init(num_cpus=2), loopback only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.batch import read_rows, run_predict, write_colour_images
from support.images import image_bytes

pytest.importorskip("ray.data", reason="the [ray] extra is not installed (pip install -e '.[ray]')")

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_ray_engine_matches_the_local_engine(colour_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "photos"
    expected = write_colour_images(data, per_class=6, fmt="JPEG")  # 36 images
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    photo = image_bytes((30, 30, 220), fmt="JPEG", size=(400, 300))
    (data / "cut.jpg").write_bytes(photo[: len(photo) // 2])
    common = ["--data", str(data), "--model-dir", str(colour_model_dir), "--probabilities"]
    local = run_predict(*common, "--out", str(tmp_path / "local.csv"), "--no-progress")
    assert local.returncode == 1, local.stderr
    ray = run_predict(
        *common,
        "--out", str(tmp_path / "ray.csv"),
        "--engine", "ray",
        "--ray-num-cpus", "2",
        "--batch-size", "8",
        "--no-progress",
    )  # fmt: skip
    assert ray.returncode == 1, ray.stderr
    # The summary names what `auto` resolved to in the actors (only Keras here), not "auto".
    assert "with tensorflow on ray" in ray.stderr, ray.stderr
    local_rows, ray_rows = read_rows(tmp_path / "local.csv"), read_rows(tmp_path / "ray.csv")
    assert [r["Id"] for r in ray_rows] == [r["Id"] for r in local_rows]  # input order
    assert {r["Id"]: r["label"] for r in ray_rows} == expected
    for a, b in zip(local_rows, ray_rows, strict=True):
        assert a["label"] == b["label"]
        for name in ("cup", "glass", "plate", "spoon", "fork", "knife"):
            assert float(a[name]) == pytest.approx(float(b[name]), abs=1e-5)
    errors = {e["Id"]: e["reason"] for e in read_rows(tmp_path / "ray.errors.csv")}
    assert errors == {e["Id"]: e["reason"] for e in read_rows(tmp_path / "local.errors.csv")}
    assert errors == {"broken": "not_an_image", "cut": "corrupt"}
