"""The Ray Data engine: decode in Ray tasks, infer in an actor pool, collect in the driver.

    ray.data.from_items(ids + paths)
      -> map_batches(decode, tasks)            # the shared preprocessing, any node
      -> map_batches(ModelActor, actor pool)   # the model loaded once per actor
      -> driver: journal + final output        # the same files as the local engine

The model directory travels through Ray's object store, so actors on other machines need
no copy of it; the image paths must be readable by the workers (a shared filesystem).
Needs `pip install -e '.[ray]'`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kitchenware.runtime.preprocessing import DEFAULT_MAX_PIXELS

from .decoding import decode_file
from .inputs import Item
from .results import Failure

BatchDone = Callable[[list[Item], np.ndarray], None]
FailureSeen = Callable[[Failure], None]
DEFAULT_CPUS_PER_ACTOR = 1.0
MAX_SHIPPED_MODEL_BYTES = 2 << 30  # larger model folders must sit on shared storage


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RuntimeError(
            "The Ray engine needs Ray Data: pip install -e '.[ray]' (or pip install 'ray[data]')."
        ) from exc
    return ray


def model_files(model_dir: Path) -> dict[str, bytes]:
    """Every file of a model folder, to ship through the object store."""
    files = [p for p in sorted(model_dir.rglob("*")) if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    if size > MAX_SHIPPED_MODEL_BYTES:
        raise RuntimeError(f"{model_dir} holds {size:,} bytes; too big to ship to Ray actors.")
    return {p.relative_to(model_dir).as_posix(): p.read_bytes() for p in files}


def decode_batch(batch: dict[str, np.ndarray], image_size: int, max_pixels: int | None) -> dict:
    """Ray task: paths -> uint8 images (zeros where a file failed) plus ok/reason/error."""
    count = len(batch["path"])
    images = np.zeros((count, image_size, image_size, 3), np.uint8)
    ok = np.zeros(count, bool)
    reasons, errors = [], []
    for index, path in enumerate(batch["path"]):
        decoded = decode_file(str(path), image_size, max_pixels)
        if decoded.array is not None:
            images[index], ok[index] = decoded.array, True
        reasons.append(decoded.reason)
        errors.append(decoded.error)
    return {
        "id": batch["id"],
        "image": images,
        "ok": ok,
        "reason": np.array(reasons, dtype=object),
        "error": np.array(errors, dtype=object),
    }


class ModelActor:
    """Loads the model once per actor, then scores every batch it is given."""

    def __init__(self, model: list[Any], backend: str) -> None:
        import ray

        from kitchenware.runtime.backends import load_backend

        files: dict[str, bytes] = ray.get(model[0])  # wrapped in a list: Ray passes it as-is
        self._dir = tempfile.TemporaryDirectory(prefix="kitchenware-ray-model-")
        root = Path(self._dir.name)
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        self.backend = load_backend(root, backend)
        self.backend.warm_up()
        # What `auto` resolved to in this actor: the driver reports it, not the name asked for.
        self.runtime = self.backend.runtime_info().get("backend", backend)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray(batch["ok"], bool)
        probabilities = np.zeros((len(ok), len(self.backend.class_names)), np.float32)
        if ok.any():
            images = np.asarray(batch["image"][ok], np.float32)
            probabilities[ok] = self.backend.predict_arrays(images)
        return {
            "id": batch["id"],
            "probabilities": probabilities,
            "ok": ok,
            "reason": batch["reason"],
            "error": batch["error"],
            "runtime": np.full(len(ok), self.runtime, dtype=object),
        }

    def runtime_info(self) -> dict[str, str]:
        return self.backend.runtime_info()


def _connect(ray: Any, address: str | None, num_cpus: int | None) -> bool:
    """Join `address` (an existing cluster) or start a local instance; True if we started it."""
    if ray.is_initialized():
        return False
    import kitchenware

    if address:
        # Ship this package's code; the nodes need its dependencies (same image or venv).
        package = str(Path(kitchenware.__file__).parent)
        ray.init(address=address, runtime_env={"py_modules": [package]}, log_to_driver=False)
        return False
    # A local instance for this run only, on loopback, without the dashboard.
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    return True


def run_ray(
    items: list[Item],
    model_dir: Path,
    backend: str,
    options: dict[str, Any],
    on_batch: BatchDone,
    on_failure: FailureSeen,
) -> dict[str, str]:
    """Score `items` on Ray; same callbacks as `kitchenware.batch.local.run_local`."""
    from kitchenware.runtime.metadata import read_metadata

    ray = _import_ray()
    started_here = _connect(ray, options.get("address"), options.get("num_cpus"))
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # predict.py draws its own bar over files
        image_size = read_metadata(model_dir).image_size
        batch_size = int(options.get("batch_size") or 32)
        cpus_per_actor = float(options.get("cpus_per_actor") or DEFAULT_CPUS_PER_ACTOR)
        cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
        # Leave one CPU for the decode tasks, or the actors can starve them.
        actors = int(options.get("actors") or max(1, (cluster_cpus - 1) // cpus_per_actor))
        if actors * cpus_per_actor > cluster_cpus - 1:
            # Actors hold their CPUs for the whole run; decode tasks then never get one.
            raise ValueError(
                f"{actors} actor(s) x {cpus_per_actor:g} CPU(s) leave no CPU for decoding on a "
                f"cluster of {cluster_cpus:g} CPU(s): lower --ray-actors or "
                "--ray-cpus-per-actor."
            )
        model_ref = ray.put(model_files(model_dir))
        by_id = {item.id: item for item in items}
        rows = [{"id": item.id, "path": str(item.path)} for item in items]
        dataset = (
            ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // batch_size))
            .map_batches(
                decode_batch,
                batch_size=batch_size,
                batch_format="numpy",
                fn_kwargs={
                    "image_size": image_size,
                    "max_pixels": options.get("max_pixels", DEFAULT_MAX_PIXELS),
                },
            )
            .map_batches(
                ModelActor,
                batch_size=batch_size,
                batch_format="numpy",
                fn_constructor_kwargs={"model": [model_ref], "backend": backend},
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=cpus_per_actor,
            )
        )
        runtimes: set[str] = set()
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            runtimes.update(str(r) for r in batch["runtime"])
            ok = np.asarray(batch["ok"], bool)
            ids = [str(i) for i in batch["id"]]
            good = [by_id[i] for i, fine in zip(ids, ok, strict=True) if fine]
            if good:
                on_batch(good, np.asarray(batch["probabilities"])[ok])
            for i, fine, reason, error in zip(
                ids, ok, batch["reason"], batch["error"], strict=True
            ):
                if not fine:
                    on_failure(Failure(by_id[i], str(reason), str(error)))
        served = ", ".join(sorted(runtimes)) or backend  # no batch: no actor ever loaded
        return {"backend": f"{served} on ray", "actors": str(actors)}
    finally:
        if started_here:
            ray.shutdown()
