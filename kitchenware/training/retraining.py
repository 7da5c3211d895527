"""One retrain: corrections in the feedback store -> a warm-started candidate of the served
model -> a side-by-side comparison -> (only if the rule passes and it is asked) a new
version of the served model in the store, with its lineage.

    result = retrain(RetrainOptions(model_tag="kitchenware-xception:latest"))

Not forgetting: with a base dataset its train split is replayed beside the corrections;
without one, the current model's probabilities on recent traffic photos (kept by the
service, unlabelled) are targets too (distillation), so the candidate agrees with the
current model wherever no correction says otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kitchenware.modelbuild.versions import framework_versions
from kitchenware.runtime.files import file_sha256
from kitchenware.runtime.metadata import MODEL_FILENAME, write_metadata
from kitchenware.training.corrections import (
    Correction,
    RetrainInputError,
    data_fingerprint,
    read_corrections,
    read_traffic,
    split_holdout,
    store_exists,
)
from kitchenware.training.retrain_report import Comparison, RuleCheck, Scored, write_report
from kitchenware.training.retrain_shadow import ShadowSummary, read_shadow_log, summarize_shadow
from kitchenware.training.warmstart import (
    WarmModel,
    cached_features,
    check_cut,
    fit_head,
    head_probabilities,
    load_warm_model,
)

if TYPE_CHECKING:
    from kitchenware.runtime.artifacts import RuntimeManifest

CANDIDATE_DIR = "candidate"
STAGED_SUFFIX = "-candidate"  # kitchenware-xception -> kitchenware-xception-candidate


@dataclass
class RetrainOptions:
    model_tag: str
    feedback_url: str = ""
    feedback_images_dir: str | None = None
    data: Path | None = None  # base dataset to replay (Kaggle layout or class folders)
    photos: Path | None = None  # labelled real photos; default: the published model's
    run_dir: Path | None = None
    cache_dir: Path | None = Path("runs/feature-cache")
    holdout_fraction: float = 0.3
    min_holdout: int = 5
    base_margin: float = 0.01
    max_traffic: int = 2000
    epochs: int = 200
    patience: int = 15
    learning_rate: float = 1e-3
    # Why smoothing: refit to ~70 corrections until a loss near 0, the head turned so sharp
    # that int8's small changes of the backbone features flipped decisive answers on photos
    # nobody corrected, and the candidate failed the int8 gate its parent passes
    # (docs/models.md "When a candidate loses int8"). Smoothed targets keep it less sharp.
    label_smoothing: float = 0.1
    batch_size: int = 32
    seed: int = 0
    promote: bool = False
    stage: bool = False  # import a passing candidate under <name>-candidate, for shadow mode
    shadow_model: str = ""  # a staged candidate whose shadow record the report should use
    monitoring_dir: Path = Path("monitoring")  # where the service's prediction logs are
    prediction_log: str = "kitchenware_predictions"


@dataclass
class RetrainResult:
    run_dir: Path
    parent_tag: str
    comparison: Comparison
    report: Path
    promoted_tag: str | None = None
    staged_tag: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def _one_hot(indices: Sequence[int] | np.ndarray, count: int) -> np.ndarray:
    return np.eye(count, dtype=np.float32)[np.asarray(indices, dtype=np.int64)]


def _no_none(value: Any) -> Any:
    """BentoML's model metadata refuses None values: drop them, recursively."""
    if isinstance(value, dict):
        return {k: _no_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_no_none(v) for v in value if v is not None]
    return value


def _read_store(options: RetrainOptions) -> tuple[list[Correction], list[Any], str, int]:
    from kitchenware.serving.feedback.store import default_url, open_store, redacted

    url = options.feedback_url or default_url()  # as the service resolves it
    if not store_exists(url):
        raise RetrainInputError(f"No feedback store at {redacted(url)}: nothing to retrain from.")
    with open_store(url, options.feedback_images_dir) as store:
        where = store.describe()
        corrections, gone = read_corrections(store)
        traffic = read_traffic(store, options.max_traffic, {c.sha256 for c in corrections})
    if not corrections:
        raise RetrainInputError(
            f"The feedback store {where} holds no corrections: send some to /feedback first."
        )
    return corrections, traffic, where, gone


def _photos(options: RetrainOptions) -> Any:
    from kitchenware.modelbuild.pretrained import PretrainedError, load_photos, real_photos

    try:
        return load_photos(options.photos) if options.photos else real_photos()
    except PretrainedError as exc:
        print(f"note: labelled real photos unavailable ({exc})")
        return None


def retrain(options: RetrainOptions) -> RetrainResult:
    """Raises RetrainInputError (one sentence) when there is nothing, or too little, to use."""
    import bentoml

    from kitchenware.runtime.metadata import read_metadata

    clock = _Clock()
    with clock.step("read store"):
        corrections, traffic, where, gone = _read_store(options)
    stored = bentoml.models.get(options.model_tag)
    parent_tag, parent_dir = str(stored.tag), Path(stored.path)
    classes = read_metadata(parent_dir).class_names
    unknown = [c for c in corrections if c.label not in classes]
    corrections = [c for c in corrections if c.label in classes]
    print(
        f"{len(corrections)} corrected photo(s) in {where} for {parent_tag}"
        + (f"; {len(unknown)} with labels the model does not have were left out" if unknown else "")
        + (f"; {gone} correction(s) whose photo is gone" if gone else "")
    )
    # Before any heavy work: too few corrections is a refusal, not a slow failure.
    train_c, holdout_c = split_holdout(
        corrections, options.holdout_fraction, options.seed, options.min_holdout
    )
    with clock.step("load model"):
        warm = load_warm_model(parent_dir)
    run_dir = options.run_dir or Path("runs") / (
        dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-retrain"
    )
    run_dir.mkdir(parents=True, exist_ok=True)

    def features(paths: Sequence[Path], shas: Sequence[str], label: str) -> np.ndarray:
        with clock.step("backbone features"):
            values, _ = cached_features(warm, paths, shas, options.cache_dir, label=label)
        return values

    def labels_of(items: Sequence[Any]) -> np.ndarray:
        return np.asarray([classes.index(item.label) for item in items], dtype=np.int64)

    x_train = features([c.path for c in train_c], [c.sha256 for c in train_c], "corrections")
    x_hold = features([c.path for c in holdout_c], [c.sha256 for c in holdout_c], "holdout")
    photos = _photos(options)
    labelled = [pid for pid in (photos.ids if photos else []) if pid in photos.labels]
    with clock.step("check cut"):
        from kitchenware.runtime.preprocessing import preprocess_bytes

        probe = [c.path for c in corrections[:4]]
        check_cut(
            warm, np.stack([preprocess_bytes(p.read_bytes(), warm.image_size) for p in probe])
        )
    photo_paths = [photos.path(pid) for pid in labelled] if photos else []
    x_photos = features(photo_paths, [file_sha256(p) for p in photo_paths], "labelled photos")

    base = _base_dataset(options, classes) if options.data else None
    x_base = {
        name: features(
            [s.path for s in items], [file_sha256(s.path) for s in items], f"base {name}"
        )
        for name, items in (base or {}).items()
    }
    x_traffic = features([t.path for t in traffic], [t.sha256 for t in traffic], "traffic")
    with clock.step("evaluation"):
        current = {
            "train": head_probabilities(warm, x_train),
            "holdout": head_probabilities(warm, x_hold),
            "photos": head_probabilities(warm, x_photos),
            "traffic": head_probabilities(warm, x_traffic),
            **{f"base {k}": head_probabilities(warm, v) for k, v in x_base.items()},
        }

    # Training set: corrections (hard labels), weighted to match what keeps the old knowledge.
    count = len(classes)
    if base:
        keep_x, keep_y = x_base["train"], _one_hot(labels_of(base["train"]), count)
        kept = f"replay of {options.data} ({len(keep_x)} train images)"
    else:
        keep_x, keep_y = x_traffic, current["traffic"]
        kept = (
            f"distillation on {len(keep_x)} recent traffic photos (current model's probabilities)"
        )
    correction_weight = max(1.0, len(keep_x) / max(1, len(x_train)))
    print(f"Not forgetting: {kept}; {len(x_train)} corrections weigh {correction_weight:.1f} each")
    x = np.concatenate([x_train, keep_x]) if len(keep_x) else x_train
    y = (
        np.concatenate([_one_hot(labels_of(train_c), count), keep_y])
        if len(keep_x)
        else _one_hot(labels_of(train_c), count)
    )
    weights = np.concatenate(
        [np.full(len(x_train), correction_weight), np.ones(len(keep_x))]
    ).astype(np.float32)
    val = (x_base["val"], _one_hot(labels_of(base["val"]), count)) if base else None
    with clock.step("head training"):
        fit = fit_head(
            warm,
            (x, y, weights),
            val,
            epochs=options.epochs,
            patience=options.patience,
            learning_rate=options.learning_rate,
            batch_size=options.batch_size,
            seed=options.seed,
            label_smoothing=options.label_smoothing,
        )
    with clock.step("evaluation"):
        comparison = Comparison(
            class_names=list(classes),
            holdout=Scored(
                "holdout",
                labels_of(holdout_c),
                current["holdout"],
                head_probabilities(warm, x_hold),
            ),
            photos=None
            if photos is None
            else Scored(
                "photos",
                np.asarray([classes.index(photos.labels[p]) for p in labelled], dtype=np.int64),
                current["photos"],
                head_probabilities(warm, x_photos),
                ids=labelled,
            ),
            base_test=None
            if not base
            else Scored(
                "base test",
                labels_of(base["test"]),
                current["base test"],
                head_probabilities(warm, x_base["test"]),
            ),
            traffic=Scored(
                "traffic",
                current["traffic"].argmax(-1),
                current["traffic"],
                head_probabilities(warm, x_traffic),
            ),
            base_margin=options.base_margin,
        )
        comparison.shadow = _shadow_summary(options)
        comparison.metric_checks()

    fingerprint = data_fingerprint(
        [f"{c.sha256}:{c.label}" for c in corrections],
        [t.sha256 for t in traffic] if not base else [str(options.data)],
    )
    header = {
        "parent_tag": parent_tag,
        "feedback_store": where,
        "corrections": f"{sum(len(c.ids) for c in corrections)} corrections of "
        f"{len(corrections)} photos ({len(train_c)} train, {len(holdout_c)} holdout, "
        f"seed {options.seed})",
        "not_forgetting": kept,
        "head_training": f"{fit.epochs} epochs, best {fit.best_epoch} "
        f"(early stopping on {'val_loss' if val else 'loss'}, "
        f"label smoothing {options.label_smoothing:g})",
        "data_fingerprint": fingerprint,
    }
    candidate_dir = run_dir / CANDIDATE_DIR
    lineage = {
        "parent_tag": parent_tag,
        "corrections": {
            "count": sum(len(c.ids) for c in corrections),
            "photos": len(corrections),
            "ids": sorted(i for c in corrections for i in c.ids),
        },
        "data_fingerprint": fingerprint,
        "not_forgetting": kept,
    }
    with clock.step("save candidate"):
        _save_candidate(warm, candidate_dir, options, lineage, comparison)
    if comparison.passed:
        with clock.step("runtime gate"):
            comparison.checks.append(_runtime_gate(candidate_dir, parent_dir, photos))
    else:
        comparison.checks.append(RuleCheck(RUNTIME_RULE, None, "not run: rules above failed"))
    _save_candidate(warm, candidate_dir, options, lineage, comparison, model_saved=True)
    report = write_report(comparison, run_dir, header, clock.seconds)
    result = RetrainResult(run_dir, parent_tag, comparison, report, timings=clock.seconds)
    if comparison.passed and options.promote:
        from kitchenware.modelbuild.store import import_model_dir

        with clock.step("import"):
            result.promoted_tag, _ = import_model_dir(candidate_dir, name=stored.tag.name)
    elif comparison.passed and options.stage:
        from kitchenware.modelbuild.store import import_model_dir

        with clock.step("import"):
            name = f"{stored.tag.name}{STAGED_SUFFIX}"  # the served name's :latest stays
            result.staged_tag, _ = import_model_dir(candidate_dir, name=name)
    return result


def _shadow_summary(options: RetrainOptions) -> ShadowSummary | None:
    """The shadow record of `options.shadow_model`, when the service left one."""
    if not options.shadow_model:
        return None
    import bentoml
    from bentoml.exceptions import NotFound

    from kitchenware.serving.feedback.store import default_url, open_store

    tags = [options.shadow_model]
    with contextlib.suppress(NotFound, ValueError):  # name:latest -> name:version
        tags.append(str(bentoml.models.get(options.shadow_model).tag))
    records = read_shadow_log(options.monitoring_dir, options.prediction_log)
    if not records:
        print(f"note: no shadow log under {options.monitoring_dir} for {options.shadow_model}")
        return None
    with open_store(options.feedback_url or default_url(), options.feedback_images_dir) as store:
        return summarize_shadow(records, tags, store.feedback_records())


def _base_dataset(options: RetrainOptions, classes: Sequence[str]) -> dict[str, Sequence[Any]]:
    from kitchenware.training.data import discover_dataset, split_dataset

    assert options.data is not None
    dataset = discover_dataset(options.data, allowed_labels=list(classes))
    split = split_dataset(dataset.samples, val_fraction=0.15, test_fraction=0.15, seed=options.seed)
    return {"train": split.train, "val": split.val, "test": split.test}


def _save_candidate(
    warm: WarmModel,
    directory: Path,
    options: RetrainOptions,
    lineage: dict[str, Any],
    comparison: Comparison,
    *,
    model_saved: bool = False,
) -> None:
    """model.keras once; metadata.json (lineage, both models' metrics, the rule) each call."""
    directory.mkdir(parents=True, exist_ok=True)
    if not model_saved:
        warm.model.save(directory / MODEL_FILENAME)
    summary = comparison.to_dict()
    recorded = {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()}
    metadata = warm.metadata.model_copy(
        update={
            "training_config": _no_none({"retrain": recorded}),
            "dataset_fingerprint": lineage["data_fingerprint"],
            "metrics": _no_none({"holdout_accuracy": comparison.holdout.accuracy("candidate")}),
            "provenance": _no_none(
                {
                    **warm.metadata.provenance,
                    "retrained_from": {
                        **lineage,
                        "metrics": {
                            w: {
                                "holdout": summary[w]["holdout"],
                                "base_test": summary[w]["base_test"],
                                "labelled_photos_right": summary[w]["labelled_photos_right"],
                            }
                            for w in ("current", "candidate")
                        },
                        "promotion_rule": {
                            "passed": summary["passed"],
                            "checks": summary["checks"],
                        },
                    },
                }
            ),
            "framework_versions": framework_versions(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
        }
    )
    write_metadata(metadata, directory)


def _runtime_gate(candidate_dir: Path, parent_dir: Path, photos: Any) -> RuleCheck:
    """Rule 4: convert and gate the candidate as every import does (modelbuild/conversion),
    on the same calibration and gate images as the parent's import; then `runtime_rule`."""
    from kitchenware.modelbuild.conversion import photo_artifacts_hook
    from kitchenware.runtime.artifacts import read_manifest

    if photos is None:
        return RuleCheck(RUNTIME_RULE, False, "no real photos to gate on")
    paths = [photos.path(pid) for pid in photos.ids]
    photo_artifacts_hook(paths, photos.labels)(candidate_dir)
    candidate = read_manifest(candidate_dir)
    assert candidate is not None
    return runtime_rule(candidate, read_manifest(parent_dir))


RUNTIME_RULE = "runtime gates pass"


def runtime_rule(candidate: RuntimeManifest, parent: RuntimeManifest | None) -> RuleCheck:
    """Each OpenVINO backend the current model passed must pass for the candidate too: a
    promotion must not silently move serving to a slower runtime. A failure says why (the
    gate's own sentence) and what `auto` would serve instead, so a refusal is plain."""
    from kitchenware.runtime.artifacts import OPENVINO_FP32
    from kitchenware.runtime.backends import AUTO_ORDER, TENSORFLOW

    # Without a parent manifest (a TensorFlow-only import), fp32 OpenVINO is the floor.
    required = [
        b for b in candidate.artifacts if (parent.passed(b) if parent else b == OPENVINO_FP32)
    ]
    failed = [b for b in required if not candidate.passed(b)]
    detail = ", ".join(
        f"{b} {'ok' if candidate.passed(b) else 'failed'}" for b in candidate.artifacts
    )
    if failed:

        def served(manifest: RuntimeManifest | None) -> str:
            gated = [b for b in AUTO_ORDER if manifest is not None and manifest.passed(b)]
            return gated[0] if gated else TENSORFLOW

        why = " ".join(candidate.artifacts[b].gate.reason for b in failed)
        detail += (
            f". {why} Promoted, the candidate would be served by {served(candidate)} "
            f"where the current model is served by {served(parent)}"
        )
    return RuleCheck(RUNTIME_RULE, not failed, detail or "no artifacts")


__all__ = ["RetrainInputError", "RetrainOptions", "RetrainResult", "retrain"]
