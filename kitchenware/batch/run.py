"""One batch-scoring run: inputs -> engine -> journal -> final output, errors file, summary."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kitchenware.runtime.backends import Backend
from kitchenware.runtime.files import file_sha256
from kitchenware.runtime.metadata import METADATA_FILENAME, MODEL_FILENAME, read_metadata

from .inputs import Inputs, Item
from .local import LocalOptions, run_local
from .results import (
    FORMATS,
    Failure,
    Journal,
    default_errors_path,
    journal_path,
    write_errors,
    write_output,
)

ENGINES = ("local", "ray")


class ModelNotFound(ValueError):
    """No model at the given directory or store tag; the message says how to get one."""


def default_model_tag() -> str:
    """The tag the service serves (KITCHENWARE_MODEL_TAG), so both answer with one model."""
    from kitchenware.serving.settings import get_settings

    return get_settings().model_tag


def default_backend() -> str:
    from kitchenware.serving.settings import get_settings

    return get_settings().backend


def resolve_model_dir(model_dir: Path | None, model_tag: str | None) -> tuple[Path, str]:
    """(directory, name shown in the summary) from --model-dir or a BentoML store tag."""
    if model_dir is not None:
        if not (model_dir / METADATA_FILENAME).is_file():
            raise ModelNotFound(
                f"{model_dir} holds no {METADATA_FILENAME}: pass a folder with model.keras and "
                "metadata.json (what train.py --export or saved_model/ holds)."
            )
        return model_dir, str(model_dir)
    import bentoml
    from bentoml.exceptions import BentoMLException

    tag = model_tag or default_model_tag()
    try:
        stored = bentoml.models.get(tag)
    except BentoMLException as exc:
        raise ModelNotFound(
            f"Model {tag} is not in the BentoML store ({exc}). Import one with "
            "`make import-demo` (what `make serve` does first), or pass --model-dir DIR."
        ) from exc
    return Path(stored.path), str(stored.tag)


def model_fingerprint(model_dir: Path) -> str:
    model_file = model_dir / MODEL_FILENAME
    return file_sha256(model_file if model_file.is_file() else model_dir / METADATA_FILENAME)


@dataclass
class RunSummary:
    total: int
    scored: int  # in this run
    resumed: int  # already in the journal from an earlier run
    failures: list[Failure]
    seconds: float
    labels: Counter[str]
    out: Path
    errors_path: Path
    model: str
    backend: dict[str, str] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        failed = len(self.failures)
        reasons = Counter(f.reason for f in self.failures)
        engine = f" with {self.backend['backend']}" if self.backend.get("backend") else ""
        text = [
            f"Scored {self.scored} image(s) in {self.seconds:.1f} s ({self.rate:.1f} img/s)"
            f"{engine} on {self.model}"
            + (f"; {self.resumed} resumed from an earlier run" if self.resumed else "")
            + ".",
            "Labels: " + (", ".join(f"{k} {v}" for k, v in sorted(self.labels.items())) or "none"),
            f"Wrote {self.out} ({sum(self.labels.values())} of {self.total} id(s)).",
        ]
        if failed:
            detail = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
            text.append(f"{failed} file(s) failed ({detail}): see {self.errors_path}.")
        return text


@dataclass(frozen=True)
class RunOptions:
    out: Path
    fmt: str = "csv"
    probabilities: bool = False
    errors_path: Path | None = None
    engine: str = "local"
    backend: str = "auto"
    restart: bool = False
    progress: bool = True
    local: LocalOptions = field(default_factory=LocalOptions)
    ray: dict[str, Any] = field(default_factory=dict)  # kitchenware.batch.ray_engine options


def score(
    inputs: Inputs,
    model_dir: Path,
    model_name: str,
    options: RunOptions,
    backend: Backend | None = None,
) -> RunSummary:
    """Score every input not already in the journal, then write the output and errors files.

    `backend`: a model already loaded from `model_dir` (local engine), to score several
    inputs without loading it again; by default it is loaded with `options.backend`.
    """
    if options.fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {options.fmt!r}.")
    if options.engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {options.engine!r}.")
    metadata = read_metadata(model_dir)
    class_names = metadata.class_names
    header = {
        "model_sha256": model_fingerprint(model_dir),
        "backend": options.backend,
        "class_names": class_names,
        "model": model_name,
    }
    journal = Journal(journal_path(options.out), header, restart=options.restart)
    todo = [item for item in inputs.items if item.id not in journal.done]
    resumed = len(inputs.items) - len(todo)
    failures: list[Failure] = []
    bar = _LazyBar(len(todo), options.progress)

    def on_batch(items: list[Item], probabilities: np.ndarray) -> None:
        journal.append(items, probabilities)
        bar.update(len(items))

    def on_failure(failure: Failure) -> None:
        failures.append(failure)
        bar.update(1)

    started = time.perf_counter()
    try:
        runtime: dict[str, str] = {}
        if todo and options.engine == "ray":
            from .ray_engine import run_ray

            runtime = run_ray(todo, model_dir, options.backend, options.ray, on_batch, on_failure)
        elif todo:
            if backend is None:
                from kitchenware.runtime.backends import load_backend

                backend = load_backend(model_dir, options.backend)
                backend.warm_up()  # trace once, so the rate is the steady one
            runtime = backend.runtime_info()
            started = time.perf_counter()  # the rate counts scoring, not loading the model
            bar.start()
            run_local(todo, backend, options.local, on_batch, on_failure)
        seconds = time.perf_counter() - started
    finally:
        bar.close()
        journal.close()
    labels = write_output(
        options.out,
        options.fmt,
        inputs.items,
        journal.done,
        class_names,
        probabilities=options.probabilities,
    )
    errors_path = options.errors_path or default_errors_path(options.out)
    if failures:
        write_errors(errors_path, failures)
    else:
        errors_path.unlink(missing_ok=True)  # an earlier run's list no longer holds
        journal.remove()  # every id is in the output; a rerun starts afresh
    return RunSummary(
        total=len(inputs.items),
        scored=len(todo) - len(failures),
        resumed=resumed,
        failures=failures,
        seconds=seconds,
        labels=labels,
        out=options.out,
        errors_path=errors_path,
        model=model_name,
        backend=runtime,
    )


class _LazyBar:
    """A tqdm bar over files, shown from the first result (after the model has loaded)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled and total > 0
        self.bar: Any = None

    def start(self) -> None:
        if self.enabled and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="img", desc="scoring", dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.start()
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
