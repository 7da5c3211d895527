"""Names that do not collide: a training run never takes the demo's or the published
model's store name by default, and `make serve MODEL=<tag>` serves that tag or says why not."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.service import REPO, store_env

from kitchenware import MODEL_NAME, PRETRAINED_MODEL_NAME, TRAINED_MODEL_NAME
from kitchenware.training.cli import build_parser, config_from_args


def test_train_py_saves_under_its_own_name_by_default(tmp_path: Path) -> None:
    config = config_from_args(build_parser().parse_args(["--data", str(tmp_path)]))
    assert config.model_name == TRAINED_MODEL_NAME
    assert TRAINED_MODEL_NAME not in (MODEL_NAME, PRETRAINED_MODEL_NAME)


def test_make_serve_with_an_unknown_tag_is_one_sentence(tmp_path: Path) -> None:
    done = subprocess.run(
        ["make", "-s", "serve", "MODEL=kitchenware-xception:nosuchversion", "PORT=1"],
        env=store_env(tmp_path / "home"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: no model kitchenware-xception:nosuchversion in the BentoML store" in done.stderr
    assert "Traceback" not in done.stderr
