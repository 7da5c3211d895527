"""Shared helpers for the service tests: a tiny real Keras model and a served instance.

The model is a real Keras CNN whose weights are set by hand so that its prediction
depends on the mean colour (red -> cup, green -> glass, ...): tests can then check labels
and batch order without training anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kitchenware import MODEL_NAME
from kitchenware.localserver import free_port, running
from kitchenware.runtime.metadata import KITCHENWARE_CLASSES

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `import service` works whichever way pytest was started
VENV_BIN = Path(sys.executable).parent
BENTOML = str(VENV_BIN / "bentoml")
CLASS_NAMES = list(KITCHENWARE_CLASSES)
# The colour each class is "about" in the hand-made model, RGB in [0, 1].
CLASS_COLOURS = {
    "cup": (1, 0, 0),
    "glass": (0, 1, 0),
    "plate": (0, 0, 1),
    "spoon": (1, 1, 0),
    "fork": (0, 1, 1),
    "knife": (1, 0, 1),
}
DEMO_MODEL_TAG = "kitchenware:latest"  # the demo model's store name; the colour model's too
TEST_IMAGE_SIZE = 64
# Small limits so the limit cases of the upload catalogue stay cheap to send.
SHARED_SERVER_SETTINGS = {
    "max_upload_bytes": "3000000",
    "max_image_pixels": "2000000",
    "max_batch_files": "8",
}


def build_colour_model(
    directory: Path,
    image_size: int = TEST_IMAGE_SIZE,
    busywork_filters: int = 0,
    colours: dict[str, tuple[int, int, int]] | None = None,
) -> Path:
    """Write model.keras + metadata.json of a small CNN that classifies by mean colour.

    `busywork_filters` adds a wide convolution branch whose output is multiplied by zero:
    same predictions, but slow enough per image to fill the batching queue in tests.
    `colours`: another class -> colour map (a model that answers differently, e.g. a
    candidate for shadow mode); default CLASS_COLOURS.
    """
    import keras

    from kitchenware.modelbuild.store import export_model
    from kitchenware.modelbuild.versions import framework_versions
    from kitchenware.runtime.metadata import ModelMetadata
    from kitchenware.runtime.preprocessing import PREPROCESSING_NAME

    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    conv = keras.layers.Conv2D(3, 3, padding="same", name="identity_conv")
    x = conv(x)
    if busywork_filters:
        wide = keras.layers.Conv2D(busywork_filters, 3, padding="same")(x)
        wide = keras.layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros")(wide)
        x = keras.layers.Add()([x, wide])
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(len(CLASS_NAMES), name="colour_centroids")
    x = dense(x)
    outputs = keras.layers.Softmax()(x)
    model = keras.Model(inputs, outputs)

    kernel = np.zeros((3, 3, 3, 3), dtype=np.float32)
    kernel[1, 1] = np.eye(3)  # a 3x3 convolution that passes each channel through unchanged
    conv.set_weights([kernel, np.zeros(3, np.float32)])
    centroids = np.array([(colours or CLASS_COLOURS)[name] for name in CLASS_NAMES], np.float32)
    scale = 8.0  # sharp enough that a pure colour wins clearly, soft enough to differ per image
    dense.set_weights([scale * centroids.T, -scale * (centroids**2).sum(axis=1) / 2])

    metadata = ModelMetadata(
        class_names=CLASS_NAMES,
        image_size=image_size,
        preprocessing=PREPROCESSING_NAME,
        backbone="colour-test-cnn",
        training_config={"note": "hand-set weights for tests; not trained"},
        framework_versions=framework_versions(),
    )
    export_model(model, metadata, directory)
    return directory


@dataclass
class ServedService:
    """A running `bentoml serve` subprocess."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    cold_start_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serve(
    target: str,
    env: dict[str, str],
    *,
    cwd: Path = REPO,
    timeout: float = 180,
    log_dir: Path | None = None,
) -> Iterator[ServedService]:
    """`bentoml serve TARGET` on a free loopback port; yields once /readyz answers 200."""
    port = free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="kitchenware-serve-log-"))
    log_path = log_dir / f"serve-{port}.log"
    command = [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    ready = running(
        command, ready_url=f"{url}/readyz", log_path=log_path, env=env, cwd=cwd, timeout=timeout
    )
    with ready as (process, probes):
        served = ServedService(url, port, process, log_path, env, time.monotonic() - started)
        served.extra["readyz_probes"] = probes
        yield served


def store_env(
    bentoml_home: Path,
    *,
    default_model: bool = False,
    monitoring_dir: Path | str | None = None,
    overrides: Mapping[str, str] | None = None,
    **settings: str,
) -> dict[str, str]:
    """Environment for a subprocess that uses the store in `bentoml_home`.

    It serves the demo-named model (`kitchenware:latest`, what these helpers import) unless
    `model_tag` is given, or `default_model=True` leaves the service's own default (the
    published Xception) in charge. `monitoring_dir`: where the prediction log's JSON lines
    go (the test's folder, not the working directory). `overrides`: more settings by name
    (a test's parameter dict), the same as keyword arguments.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KITCHENWARE_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(
        BENTOML_HOME=str(bentoml_home),
        BENTOML_DO_NOT_TRACK="True",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    if not default_model:
        settings = {"model_tag": DEMO_MODEL_TAG, **settings}
    settings = {**settings, **(overrides or {})}
    env.update({f"KITCHENWARE_{k.upper()}": v for k, v in settings.items()})
    if monitoring_dir is not None:
        env["BENTOML_CONFIG_OPTIONS"] = (
            f"services.kitchenware.monitoring.options.log_path={monitoring_dir}"
        )
    return env


def import_into_store(model_dir: Path, bentoml_home: Path, name: str = MODEL_NAME) -> str:
    """Import a model directory into the store at `bentoml_home` as `name` (in a subprocess, so
    the store location of this test process is never fixed by accident)."""
    code = (
        "import sys; from kitchenware.modelbuild.store import import_model_dir; "
        "print(import_model_dir(sys.argv[1], sys.argv[2])[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(model_dir), name],
        env=store_env(bentoml_home),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return result.stdout.strip().splitlines()[-1]


_shared: dict[str, object] = {}


def shared_model_dir(base: Path) -> Path:
    """One colour model per test session."""
    if "model_dir" not in _shared:
        _shared["model_dir"] = build_colour_model(base / "colour_model")
    return Path(str(_shared["model_dir"]))


_sessions: dict[str, ServedService] = {}
ServerStart = Callable[
    [], tuple[contextlib.AbstractContextManager[ServedService], dict[str, object]]
]


def session_server(request: object, key: str, start: ServerStart) -> ServedService:
    """One served service per test session and `key`, shared by every module that asks.

    `start` runs once: it returns the `serve(...)` context and what to put in `extra`.
    """
    if key not in _sessions:
        context, extra = start()
        server = context.__enter__()
        server.extra.update(extra)
        _sessions[key] = server
        request.config.add_cleanup(lambda: context.__exit__(None, None, None))  # type: ignore[attr-defined]
    shared = _sessions[key]
    if shared.process.poll() is not None:
        raise RuntimeError(f"shared server {key!r} died:\n{shared.log()}")
    return shared


def shared_server(request: object, base: Path) -> ServedService:
    """The colour model served with SHARED_SERVER_SETTINGS, once per test session."""

    def start() -> tuple[contextlib.AbstractContextManager[ServedService], dict[str, object]]:
        home = base / "bentoml_home"
        model_dir = shared_model_dir(base)
        tag = import_into_store(model_dir, home)
        env = store_env(home, overrides=SHARED_SERVER_SETTINGS)
        context = serve("service:Kitchenware", env, log_dir=base)
        return context, {"model_dir": model_dir, "tag": tag, "bentoml_home": home}

    return session_server(request, "colour", start)


def cleanup_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
