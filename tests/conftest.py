"""Shared fixtures. The whole test session uses a throwaway BentoML home, never ~/bentoml."""

from __future__ import annotations

import os
import tempfile

# Set before anything imports bentoml: its store location is read at import time.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="kitchenware-test-bentoml-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
