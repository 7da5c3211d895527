from __future__ import annotations

from pathlib import Path

import pytest
from support.service import build_colour_model


@pytest.fixture(scope="session")
def colour_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Keras CNN that labels by mean colour (tests/support/service.py)."""
    return build_colour_model(tmp_path_factory.mktemp("batch-model") / "colour")
