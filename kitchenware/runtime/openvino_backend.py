"""Serving a model's OpenVINO IR on the CPU: what `openvino-fp32/-bf16/-int8` load.

Imports openvino only (no TensorFlow, no NNCF): a serving process with an OpenVINO backend
stays at ~200 MB instead of TensorFlow's ~1 GB. The IR was made at import/build time by
`kitchenware.modelbuild.conversion`; here it is only read and compiled.

On a CPU with BF16 the plugin picks bf16 unless told otherwise, so every backend asks for
its precision explicitly (`INFERENCE_PRECISION_HINT`) and reports what the plugin chose.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kitchenware.runtime.artifacts import (
    IR_FILENAME,
    IR_OF_BACKEND,
    OPENVINO_DIR,
    PRECISION_OF_BACKEND,
)
from kitchenware.runtime.files import atomic_writer
from kitchenware.runtime.metadata import MetadataBacked, ModelMetadata, read_servable_metadata
from kitchenware.runtime.preprocessing import image_batch

logger = logging.getLogger("kitchenware.backends")

# LATENCY = one stream using every core for each call: the service batches requests
# itself, so one big call at a time is the fast path (THROUGHPUT splits cores per stream).
DEFAULT_PERFORMANCE_HINT = os.environ.get("KITCHENWARE_OPENVINO_HINT", "LATENCY")
# Streams for the THROUGHPUT hint ("" = the plugin's choice); bench/serving.py measures
# one worker with several streams against the default two LATENCY workers.
DEFAULT_STREAMS = os.environ.get("KITCHENWARE_OPENVINO_STREAMS", "")


def ir_path(model_dir: Path | str, backend: str) -> Path:
    return Path(model_dir) / OPENVINO_DIR / IR_OF_BACKEND[backend] / IR_FILENAME


# Compiled-model cache (OpenVINO CACHE_DIR): the second start skips most of compile_model.
ENV_MODEL_CACHE = "KITCHENWARE_OPENVINO_CACHE_DIR"
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def _cpuinfo() -> dict[str, str]:
    """The first CPU's fields of /proc/cpuinfo (empty where there is none)."""
    info: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def cpu_description() -> dict[str, Any]:
    """The CPU as far as int8/bf16 care: model name and number, the ISA flags, and what
    OpenVINO's CPU plugin says it can do."""
    import openvino as ov

    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return {
        "model_name": info.get("model name", platform.processor() or "unknown"),
        "model": info.get("model", ""),
        "flags": [flag for flag in CPU_FLAGS_OF_INTEREST if flag in flags],
        "openvino_capabilities": [str(item) for item in capabilities],
    }


def model_cache_dir() -> Path | None:
    """A writable folder for OpenVINO's compiled-model cache, or None (no cache).

    $KITCHENWARE_OPENVINO_CACHE_DIR, else ~/.cache/kitchenware/openvino, else the temp
    folder: a read-only container root (or HOME) must not stop the service, only its cache.
    An empty KITCHENWARE_OPENVINO_CACHE_DIR turns the cache off.
    """
    configured = os.environ.get(ENV_MODEL_CACHE)
    if configured is not None:
        candidates = [Path(configured)] if configured else []
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        home_cache = Path(xdg) if xdg else Path.home() / ".cache"
        candidates = [home_cache / "kitchenware" / "openvino"]
        candidates.append(Path(tempfile.gettempdir()) / "kitchenware-openvino-cache")
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=candidate, prefix=".probe-"):
                pass
        except OSError:
            continue
        return candidate
    return None


# A compiled-model cache made when the container image was built (Dockerfile.openvino.j2:
# `python -m kitchenware.runtime.openvino_backend SEED MODEL_DIR`), one folder per CPU kind.
# The running container's cache is an empty tmpfs, so without it every start compiles.
ENV_CACHE_SEED = "KITCHENWARE_OPENVINO_CACHE_SEED"


def cpu_kind() -> str:
    """What a compiled blob is only valid for: CPU model, every ISA flag, OpenVINO version."""
    import openvino as ov

    info = _cpuinfo()
    facts = [info.get("model name", platform.processor()), info.get("model", "")]
    facts += [*sorted(info.get("flags", "").split()), ov.get_version()]
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]


def seed_folder(root: Path, path: Path, config: dict[str, str]) -> Path:
    """Where the seed keeps the blob of one IR compiled with one config on this CPU kind."""
    wanted = {k: v for k, v in config.items() if k != "CACHE_DIR"}
    named = f"{path.resolve()}|{path.stat().st_size}|{sorted(wanted.items())}"
    return root / cpu_kind() / hashlib.sha256(named.encode()).hexdigest()[:16]


def copy_seed(cache: Path, path: Path, config: dict[str, str]) -> None:
    """Copy the image's blob for this IR and config into the writable cache, if it has one
    for this CPU kind (another CPU kind compiles as usual: a blob is not portable)."""
    root = os.environ.get(ENV_CACHE_SEED)
    folder = seed_folder(Path(root), path, config) if root else None
    if folder is None or not folder.is_dir():
        return
    for blob in folder.iterdir():
        target = cache / blob.name
        if not target.exists():  # another worker may be copying it: rename is atomic
            with atomic_writer(target, "wb") as handle, blob.open("rb") as source:
                shutil.copyfileobj(source, handle)


def seed_cache(model_dir: Path, root: Path) -> list[Path]:
    """Compile the artifact `auto` tries first (the first gated one; int8 22 MB, where fp32
    is 81 MB: the image stays small) as serving will, keeping its blob under `root` for
    this CPU kind; run at image build time. Returns the folders made."""
    from kitchenware.runtime.artifacts import read_manifest
    from kitchenware.runtime.backends import AUTO_ORDER

    manifest = read_manifest(model_dir)
    gated = [name for name in AUTO_ORDER if manifest is not None and manifest.passed(name)]
    made = []
    for backend in gated[:1]:
        path = ir_path(model_dir, backend)
        config = serving_config(PRECISION_OF_BACKEND[backend], DEFAULT_PERFORMANCE_HINT)
        folder = seed_folder(root, path, config)
        folder.mkdir(parents=True, exist_ok=True)
        import openvino as ov

        ov.Core().compile_model(str(path), "CPU", {**config, "CACHE_DIR": str(folder)})
        for blob in folder.iterdir():  # OpenVINO writes 0440: the service runs as another user
            blob.chmod(0o444)
        made.append(folder)
    return made


def cpu_supports_bf16() -> bool:
    """Whether the CPU plugin can run bf16 natively (AVX-512 BF16 or AMX)."""
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in [str(item) for item in capabilities]


def serving_config(precision: str, performance_hint: str) -> dict[str, str]:
    config = {"PERFORMANCE_HINT": performance_hint, "INFERENCE_PRECISION_HINT": precision}
    if DEFAULT_STREAMS:
        config["NUM_STREAMS"] = DEFAULT_STREAMS
    return config


def compile_ir(path: Path, precision: str, performance_hint: str = DEFAULT_PERFORMANCE_HINT) -> Any:
    """Read and compile an IR for the CPU with an explicit precision."""
    import openvino as ov

    core = ov.Core()
    config = serving_config(precision, performance_hint)
    cache = model_cache_dir()
    if cache is not None:
        try:
            copy_seed(cache, path, config)
        except OSError as exc:  # costs only the compile it would have saved
            logger.warning("compiled-model seed not used: %s", exc)
        config["CACHE_DIR"] = str(cache)
    # A path, not a read model: with a cache hit OpenVINO imports the blob without the IR.
    return core.compile_model(str(path), "CPU", config)


@dataclass
class OpenVinoClassifier(MetadataBacked):
    """An IR compiled for the CPU; one inference request, called from one thread at a time."""

    name: str
    metadata: ModelMetadata
    compiled: Any
    _request: Any = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        model_dir: Path | str,
        backend: str,
        performance_hint: str = DEFAULT_PERFORMANCE_HINT,
    ) -> OpenVinoClassifier:
        path = ir_path(model_dir, backend)
        if not path.is_file():
            raise FileNotFoundError(
                f"No {backend} artifact at {path}: build it with "
                "`python build_bento_from_saved.py --import-only` (conversion runs at import)."
            )
        metadata = read_servable_metadata(model_dir)
        compiled = compile_ir(path, PRECISION_OF_BACKEND[backend], performance_hint)
        return cls(name=backend, metadata=metadata, compiled=compiled)

    def __post_init__(self) -> None:
        import openvino as ov

        self._request = self.compiled.create_infer_request()
        streams = int(self.compiled.get_property("NUM_STREAMS"))
        # With several streams (THROUGHPUT) one request uses one stream's cores only: a batch
        # is split across one request per stream, run at once.
        self._streams = ov.AsyncInferQueue(self.compiled, streams) if streams > 1 else None

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) float32 in [0, 255] -> (n, classes) probabilities."""
        batch = image_batch(batch)
        if self._streams is None or len(batch) < 2:
            outputs = self._request.infer({0: batch})
            return np.array(outputs[self.compiled.output(0)], dtype=np.float32)
        parts = np.array_split(batch, min(len(self._streams), len(batch)))
        results: dict[int, np.ndarray] = {}
        self._streams.set_callback(
            lambda request, index: results.__setitem__(
                index, request.get_output_tensor(0).data.copy()
            )
        )
        for index, part in enumerate(parts):
            self._streams.start_async({0: part}, index)
        self._streams.wait_all()
        return np.concatenate([results[i] for i in range(len(parts))]).astype(np.float32)

    def runtime_info(self) -> dict[str, str]:
        import openvino as ov

        def prop(key: str) -> str:
            try:
                return str(self.compiled.get_property(key))
            except RuntimeError:
                return "?"

        return {
            "backend": self.name,
            "runtime": f"openvino {ov.get_version().split('-')[0]}",
            # int8 kernels run where NNCF put quantize ops; the rest runs in this precision.
            "precision": _short_type(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
            "performance_hint": prop("PERFORMANCE_HINT"),
            "streams": prop("NUM_STREAMS"),
            "threads": prop("INFERENCE_NUM_THREADS"),
        }

    def warm_up(self) -> None:
        """First calls build the CPU kernels for each shape: batch 1 and a small batch."""
        size = self.image_size
        for n in (1, 2):
            self.predict_arrays(np.zeros((n, size, size, 3), dtype=np.float32))


def _short_type(element_type: Any) -> str:
    """OpenVINO's element type as f32 / bf16 / f16 (its str() is "<Type: 'float32'>")."""
    return str(element_type.get_type_name())


if __name__ == "__main__":  # image build: python -m kitchenware.runtime.openvino_backend SEED DIR..
    import sys

    for model in sys.argv[2:]:
        for folder in seed_cache(Path(model), Path(sys.argv[1])):
            print(f"compiled-model seed: {folder}")
