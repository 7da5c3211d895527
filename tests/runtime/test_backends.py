"""OpenVINO artifacts made at import, the accuracy gate (including a forced failure), `auto`.

Real conversions of the small colour model (Keras -> SavedModel -> IR, NNCF int8), real
OpenVINO inference, and a subprocess that proves the OpenVINO path never imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.images import image_bytes
from support.service import (
    CLASS_COLOURS,
    CLASS_NAMES,
    build_colour_model,
    import_into_store,
    serve,
    store_env,
)

from kitchenware.modelbuild.conversion import ImageSet, build_runtime_artifacts
from kitchenware.runtime.artifacts import (
    OPENVINO_BF16,
    OPENVINO_FP32,
    OPENVINO_INT8,
    GateRule,
    gate_result,
    has_current_manifest,
    read_manifest,
)
from kitchenware.runtime.backends import AUTO, TENSORFLOW, BackendError, load_backend
from kitchenware.runtime.startup_check import (
    ENV_MAX_MEAN_ABS_DIFF,
    REFERENCE_SLICE,
    read_reference_slice,
    run_check,
)

SIZE = 32


def colour_images(per_class: int, seed: int) -> tuple[np.ndarray, list[int | None]]:
    """Noisy single-colour images of every class, float32 0-255, with their class index."""
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    labels: list[int | None] = []
    for index, name in enumerate(CLASS_NAMES):
        for _ in range(per_class):
            base = np.array(CLASS_COLOURS[name], np.float32) * 200 + 25
            noise = rng.normal(0, 12, (SIZE, SIZE, 3))
            images.append(np.clip(base + noise, 0, 255).astype(np.float32))
            labels.append(index)
    return np.stack(images), labels


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = build_colour_model(tmp_path_factory.mktemp("ov") / "model", image_size=SIZE)
    calibration, _ = colour_images(4, seed=1)
    gate_images, gate_labels = colour_images(6, seed=2)
    build_runtime_artifacts(
        model_dir,
        ImageSet(calibration, description={"source": "colour images"}),
        ImageSet(gate_images, labels=gate_labels, description={"source": "other colour images"}),
        log=lambda message: None,
    )
    return model_dir


def test_import_writes_ir_and_a_manifest_saying_how_each_was_made(converted: Path) -> None:
    manifest = read_manifest(converted)
    assert manifest is not None
    assert set(manifest.artifacts) == {OPENVINO_FP32, OPENVINO_BF16, OPENVINO_INT8}
    for record in manifest.artifacts.values():
        assert (converted / record.ir_path).is_file()
        assert (converted / record.ir_path).with_suffix(".bin").is_file()
    assert manifest.versions["openvino"].startswith("2026.")
    assert manifest.versions["nncf"].startswith("3.")
    int8 = manifest.artifacts[OPENVINO_INT8]
    assert int8.made_by["calibration"]["images"] == 24
    assert manifest.gate_set["images"] == 36 and manifest.gate_set["labelled"] == 36
    fp32 = manifest.artifacts[OPENVINO_FP32].gate
    assert fp32.passed and fp32.top1_agreement == 1.0 and fp32.max_abs_probability_diff < 1e-4
    assert fp32.reference_correct == fp32.candidate_correct == 36


def test_openvino_fp32_agrees_with_tensorflow(converted: Path) -> None:
    images, labels = colour_images(3, seed=5)
    reference = load_backend(converted, TENSORFLOW).predict_arrays(images)
    served = load_backend(converted, OPENVINO_FP32)
    served.warm_up()
    probabilities = served.predict_arrays(images)
    assert probabilities.shape == (len(images), len(CLASS_NAMES))
    assert np.abs(probabilities - reference).max() < 1e-4
    assert list(probabilities.argmax(axis=1)) == labels
    info = served.runtime_info()
    assert info["backend"] == OPENVINO_FP32 and info["precision"] == "f32" and info["threads"]


def test_int8_is_served_exactly_when_its_gate_passed(converted: Path) -> None:
    manifest = read_manifest(converted)
    assert manifest is not None
    gate = manifest.artifacts[OPENVINO_INT8].gate
    if gate.passed:
        assert load_backend(converted, OPENVINO_INT8).name == OPENVINO_INT8
    else:
        with pytest.raises(BackendError, match="failed the accuracy gate"):
            load_backend(converted, OPENVINO_INT8)


def test_auto_picks_the_fastest_gated_artifact(converted: Path) -> None:
    manifest = read_manifest(converted)
    assert manifest is not None
    expected = next(
        name
        for name in (OPENVINO_INT8, OPENVINO_BF16, OPENVINO_FP32)
        if manifest.artifacts[name].gate.passed
    )
    assert load_backend(converted, AUTO).name == expected


def test_forced_gate_failure_is_reported_refused_and_skipped_by_auto(tmp_path: Path) -> None:
    """int8 calibrated on black images only: its ranges are wrong for real colours."""
    model_dir = build_colour_model(tmp_path / "model", image_size=SIZE)
    gate_images, gate_labels = colour_images(6, seed=2)
    manifest = build_runtime_artifacts(
        model_dir,
        ImageSet(np.zeros((8, SIZE, SIZE, 3), np.float32), description={"source": "black"}),
        ImageSet(gate_images, labels=gate_labels),
        backends=(OPENVINO_FP32, OPENVINO_INT8),
        log=lambda message: None,
    )
    int8 = manifest.artifacts[OPENVINO_INT8].gate
    assert not int8.passed, int8
    assert "openvino-int8 failed the accuracy gate" in int8.reason
    assert manifest.artifacts[OPENVINO_FP32].gate.passed
    with pytest.raises(BackendError, match="openvino-int8 failed the accuracy gate"):
        load_backend(model_dir, OPENVINO_INT8)
    assert load_backend(model_dir, AUTO).name == OPENVINO_FP32


def gate_fixture() -> tuple[np.ndarray, list[str]]:
    """100 decisive reference rows (0.9 on one class) and 10 undecided ones (0.5 / 0.4)."""
    decisive = np.full((100, 3), 0.05)
    decisive[np.arange(100), np.arange(100) % 3] = 0.9
    undecided = np.tile([0.5, 0.4, 0.1], (10, 1))
    return np.concatenate([decisive, undecided]), [f"p{i}" for i in range(110)]


def test_gate_rule_undecided_images_are_reported_never_failing() -> None:
    reference, names = gate_fixture()
    candidate = reference.copy()
    candidate[100:] = [0.4, 0.5, 0.1]  # every undecided image flips: |dp| 0.1
    result = gate_result("x", reference, candidate, names=names)
    assert result.passed, result.reason
    assert result.decisive_images == 100 and result.undecided_images == 10
    assert result.decisive_agreement == 1.0 and result.undecided_agreement == 0.0
    assert result.top1_agreement == 100 / 110
    assert result.max_abs_probability_diff == pytest.approx(0.1)
    assert result.mean_abs_probability_diff == pytest.approx(1 / 110)


def test_gate_rule_decisive_agreement_labelled_photos_and_probability_error() -> None:
    reference, names = gate_fixture()
    candidate = reference.copy()
    candidate[0] = [0.3, 0.6, 0.1]  # one decisive disagreement: 99 % passes ...
    labels: list[int | None] = [None] * 110
    assert gate_result("x", reference, candidate, labels, names).passed
    labels[0] = 0  # ... unless that image is labelled and the reference gets it right
    lost = gate_result("x", reference, candidate, labels, names)
    assert not lost.passed and lost.lost == ["p0"] and lost.candidate_correct == 0
    assert "1 labelled image(s) wrong that fp32 gets right (p0)" in lost.reason
    candidate[1] = [0.6, 0.3, 0.1]  # two decisive disagreements: 98 % < 99 %
    low = gate_result("x", reference, candidate, names=names)
    assert not low.passed and "98.00% on the 100 images where fp32 is decisive" in low.reason
    assert low.decisive_disagreements == ["p0", "p1"]

    drift = reference + np.array([0.03, -0.03, 0.0])  # top-1 kept, |dp| 0.03 everywhere
    rule = GateRule(max_mean_abs_diff=0.02)
    drifted = gate_result("x", reference, drift, names=names, rule=rule)
    assert not drifted.passed and "mean |dp| 0.0300 > 0.02" in drifted.reason
    spike = reference.copy()
    spike[5] = [0.5, 0.05, 0.45]  # one decisive image (0.9 on class 2) moved by 0.45
    spiky = gate_result("x", reference, spike, names=names, rule=GateRule(max_worst_abs_diff=0.4))
    assert not spiky.passed and "worst |dp| 0.4500 > 0.4" in spiky.reason


def test_unknown_or_missing_backends_say_what_to_do(tmp_path: Path) -> None:
    model_dir = build_colour_model(tmp_path / "plain", image_size=SIZE)
    with pytest.raises(BackendError, match="Unknown backend 'onnx'"):
        load_backend(model_dir, "onnx")
    with pytest.raises(BackendError, match=r"no OpenVINO artifacts.*--import-only"):
        load_backend(model_dir, OPENVINO_FP32)
    assert load_backend(model_dir, AUTO).name == TENSORFLOW  # falls back


def test_openvino_backend_never_imports_tensorflow(converted: Path) -> None:
    code = (
        "import sys, json, numpy as np\n"
        "from kitchenware.runtime.backends import load_backend\n"
        f"b = load_backend({str(converted)!r}, 'openvino-fp32')\n"
        f"p = b.predict_arrays(np.zeros((2, {SIZE}, {SIZE}, 3), np.float32))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(json.dumps({'shape': list(p.shape), 'heavy': heavy}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"shape": [2, len(CLASS_NAMES)], "heavy": []}


# --- the start-up check: the gate rule again, on this CPU, before a backend serves -------


def gated_artifacts(model_dir: Path) -> list[str]:
    manifest = read_manifest(model_dir)
    assert manifest is not None
    return [b for b in (OPENVINO_INT8, OPENVINO_BF16, OPENVINO_FP32) if manifest.passed(b)]


def corrupted_copy(model_dir: Path, target: Path) -> Path:
    """The model with its reference slice's fp32 outputs shifted by one class."""
    shutil.copytree(model_dir, target)
    path = target / REFERENCE_SLICE
    with np.load(path) as data:
        arrays = dict(data)
    arrays["reference"] = np.roll(arrays["reference"], 1, axis=1)
    np.savez_compressed(path, **arrays)
    return target


def test_the_startup_check_runs_on_this_cpu_within_a_second(converted: Path) -> None:
    manifest = read_manifest(converted)
    assert manifest is not None and manifest.reference_slice["images"] >= 6
    backend = load_backend(converted, AUTO)
    info = backend.runtime_info()
    outcome, seconds = re.fullmatch(
        r"(passed|failed) in ([0-9.]+) s on \d+ images", info["startup_check"]
    ).groups()  # type: ignore[union-attr]
    assert outcome == "passed" and float(seconds) <= 1.0, info
    assert backend.name == gated_artifacts(converted)[0] and "fallback_from" not in info
    tensorflow = load_backend(converted, TENSORFLOW).runtime_info()
    assert tensorflow["startup_check"].startswith("not run (the Keras fp32 model")


def test_a_corrupted_reference_fails_every_artifact_and_auto_falls_back(
    converted: Path, tmp_path: Path
) -> None:
    model_dir = corrupted_copy(converted, tmp_path / "model")
    gated = gated_artifacts(model_dir)
    backend = load_backend(model_dir, AUTO)
    info = backend.runtime_info()
    assert backend.name == TENSORFLOW
    assert info["fallback_from"] == ",".join(gated)
    assert info["fallback_reason"].count("failed the start-up check on this CPU") == len(gated)
    with pytest.raises(BackendError, match=f"{gated[0]} failed the start-up check on this CPU"):
        load_backend(model_dir, gated[0])
    forced = load_backend(model_dir, gated[0], allow_failed_gate=True)  # benchmarks only
    assert forced.runtime_info()["startup_check"].startswith("failed")


def stricter_bound(model_dir: Path) -> tuple[float, list[str], list[str]]:
    """A mean |dp| bound between the gated artifacts' own numbers on the slice, measured
    here: (bound, the artifacts above it, the artifacts under it or tensorflow)."""
    reference = read_reference_slice(model_dir)
    assert reference is not None
    gated = gated_artifacts(model_dir)
    means = {}
    for name in gated:
        result, _ = run_check(load_backend(model_dir, name), reference, GateRule())
        means[name] = result.mean_abs_probability_diff
    bound = float(np.sqrt(min(means.values()) * max(means.values())))  # between the extremes
    above = [name for name in gated if means[name] > bound]
    return bound, above, [name for name in gated if name not in above] or [TENSORFLOW]


def test_a_stricter_setting_moves_auto_to_the_next_artifact_by_the_rule(
    converted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each artifact above the bound must be skipped, the first one under it served."""
    bound, above, under = stricter_bound(converted)
    monkeypatch.setenv(ENV_MAX_MEAN_ABS_DIFF, repr(bound))
    backend = load_backend(converted, AUTO)
    assert backend.name == under[0]
    assert backend.runtime_info().get("fallback_from", "") == ",".join(above)


AS_WORKER = (
    "import json, sys, bentoml\n"
    "bentoml.server_context.worker_index = int(sys.argv[2])  # what BentoML sets in a worker\n"
    "from kitchenware.runtime.backends import load_backend\n"
    "b = load_backend(sys.argv[1], 'auto')\n"
    "print(json.dumps({'backend': b.name, 'check': b.runtime_info()['startup_check']}))\n"
)


def test_the_workers_of_one_server_share_one_check(converted: Path, tmp_path: Path) -> None:
    """Two workers (children of one process) start at once: one checks, the other waits
    and serves the same artifact; a different rule is a different verdict."""

    def start(worker: int, **env: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-c", AS_WORKER, str(converted), str(worker)]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("KITCHENWARE_")}
        full = {**clean, "TMPDIR": str(tmp_path), **env}
        return subprocess.Popen(command, env=full, stdout=subprocess.PIPE, text=True)

    def answer(process: subprocess.Popen[str]) -> dict[str, str]:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0
        return dict(json.loads(out.strip().splitlines()[-1]))

    first, second = [answer(p) for p in [start(1), start(2)]]
    assert first["backend"] == second["backend"] == gated_artifacts(converted)[0]
    shared = [
        a["check"].endswith("(run by another worker of this server)") for a in (first, second)
    ]
    assert sorted(shared) == [False, True], (first, second)
    assert all(a["check"].startswith("passed") for a in (first, second))
    looser = answer(start(1, **{ENV_MAX_MEAN_ABS_DIFF: "0.5"}))
    assert looser["check"].startswith("passed") and "another worker" not in looser["check"]


@pytest.mark.slow
def test_served_fallback_is_in_the_answer_the_metrics_and_the_log(
    converted: Path, tmp_path: Path
) -> None:
    """A real `bentoml serve`: the check runs before /readyz; what `auto` skipped shows."""
    bound, above, under = stricter_bound(converted)
    home = tmp_path / "bentoml_home"
    tag = import_into_store(converted, home)
    env = store_env(home, model_tag=tag)
    env[ENV_MAX_MEAN_ABS_DIFF] = repr(bound)
    with serve("service:Kitchenware", env, log_dir=tmp_path) as server:
        red = image_bytes((230, 20, 20), "PNG", size=(40, 30))
        answer = httpx.post(f"{server.url}/classify", files={"image": ("r.png", red)})
        metrics = httpx.get(f"{server.url}/metrics").text
        log = server.log()
    assert answer.status_code == 200 and answer.json()["runtime"] == under[0], answer.text
    fallbacks = metric_labels(metrics, "kitchenware_backend_fallback")
    assert {(f["skipped"], f["served"]) for f in fallbacks} == {(b, under[0]) for b in above}
    assert log.count("failed the start-up check on this CPU") >= len(above)
    if under[0] != TENSORFLOW:
        (check,) = metric_labels(metrics, "kitchenware_startup_check_passed")
        assert check["backend"] == under[0]


def metric_labels(metrics: str, name: str) -> list[dict[str, str]]:
    """The label sets of a Prometheus metric's samples that have the value 1."""
    samples = re.findall(rf"^{name}\{{([^}}]*)\}} 1\.0$", metrics, re.M)
    return [dict(re.findall(r'(\w+)="([^"]*)"', sample)) for sample in samples]


def test_predict_py_runs_the_same_check_and_falls_back(converted: Path, tmp_path: Path) -> None:
    from PIL import Image

    model_dir = corrupted_copy(converted, tmp_path / "model")
    photos = tmp_path / "photos"
    photos.mkdir()
    images, _ = colour_images(1, seed=9)
    for index, image in enumerate(images):
        Image.fromarray(image.astype(np.uint8)).save(photos / f"{index}.png")
    done = subprocess.run(
        [sys.executable, "predict.py", "--data", str(photos), "--model-dir", str(model_dir),
         "--out", str(tmp_path / "labels.csv"), "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "failed the start-up check on this CPU" in done.stderr
    assert "with tensorflow" in done.stderr


def test_runtimes_json_from_the_older_gate_asks_for_a_new_import(tmp_path: Path) -> None:
    """An entry imported before this gate (manifest 1, top-1 agreement on every image) is
    not served under the old verdicts; the message says how to get the new ones."""
    old_gate = {"backend": OPENVINO_INT8, "passed": True, "reason": "x", "images": 234,
                "top1_agreement": 0.99, "min_top1_agreement": 0.99,
                "max_abs_probability_diff": 0.5}  # fmt: skip
    manifest = {"manifest_version": 1, "reference": "Keras", "artifacts": {
        OPENVINO_INT8: {"backend": OPENVINO_INT8, "ir_path": "openvino/int8/model.xml",
                        "gate": old_gate}}}  # fmt: skip
    (tmp_path / "runtimes.json").write_text(json.dumps(manifest))
    assert not has_current_manifest(tmp_path)
    with pytest.raises(ValueError, match=r"older import \(version 1.*--import-only"):
        read_manifest(tmp_path)
