"""Shadow mode on a real `bentoml serve`: the colour model answers, a candidate that calls red
photos "glass" instead of "cup" runs in shadow. Answers are those of the same model served
without shadow; agreement and disagreement reach /metrics and the shadow log; a burst sheds
shadow work (counted) and no answer; the retrain report's summary joins a correction."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.images import image_bytes
from support.service import (
    CLASS_COLOURS,
    ServedService,
    build_colour_model,
    import_into_store,
    serve,
    shared_model_dir,
    shared_server,
    store_env,
)

from kitchenware.serving.feedback.store import FeedbackStore
from kitchenware.training.retrain_shadow import read_shadow_log, summarize_shadow

pytestmark = [pytest.mark.slow]

RED, BLUE = image_bytes((230, 20, 20)), image_bytes((20, 20, 230))  # cup / plate when served
CANDIDATE_COLOURS = {**CLASS_COLOURS, "cup": CLASS_COLOURS["glass"], "glass": CLASS_COLOURS["cup"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedService]:
    base = tmp_path_factory.mktemp("shadow")
    home = base / "home"
    import_into_store(shared_model_dir(tmp_path_factory.getbasetemp()), home)
    candidate = build_colour_model(base / "candidate", colours=CANDIDATE_COLOURS)
    tag = import_into_store(candidate, home, name="kitchenware-candidate")
    env = store_env(
        home,
        monitoring_dir=base / "monitoring",
        feedback_url=f"sqlite:///{base / 'feedback.db'}",
        shadow_model_tag=tag,
        shadow_sample="1",
        shadow_max_queue="2",
        shadow_max_cpu_share="0.2",
        workers="1",  # one shadow queue: the burst below must overflow it
    )
    with serve("service:Kitchenware", env, log_dir=base) as served:
        served.extra.update(candidate=tag, base=base)
        wait_until_shadow_ready(served)
        yield served


def wait_until_shadow_ready(server: ServedService) -> None:
    """The candidate loads after /readyz (it never delays the served model)."""
    deadline = time.monotonic() + 120
    while "kitchenware_shadow_ready{" not in httpx.get(f"{server.url}/metrics").text:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    assert re.search(
        r"^kitchenware_shadow_ready\{.*\} 1\.0$", httpx.get(f"{server.url}/metrics").text, re.M
    ), server.log()


def classify(url: str, photo: bytes) -> dict[str, Any]:
    answer = httpx.post(f"{url}/classify", files={"image": ("p.png", photo)}, timeout=60)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def same_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """What a client reads, minus what differs between two servers (tag, id)."""
    return {k: answer[k] for k in ("label", "confidence", "probabilities", "top_k")}


def shadow_counts(server: ServedService) -> dict[str, float]:
    """Agreements, disagreements by (served, shadow), sheds by reason, from /metrics."""
    text = httpx.get(f"{server.url}/metrics").text
    counts: dict[str, float] = {}
    pattern = r"^kitchenware_shadow_(agreements|disagreements|shed)_total\{([^}]*)\} (\S+)$"
    for kind, labels, value in re.findall(pattern, text, re.M):
        parts = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        assert parts["candidate"] == server.extra["candidate"]
        key = kind + "".join(f":{parts[k]}" for k in ("served", "shadow", "reason") if k in parts)
        counts[key] = counts.get(key, 0) + float(value)
    return counts


def wait_for_shadow(server: ServedService, images: int) -> dict[str, float]:
    """/metrics once `images` sampled images were shadowed or shed (the shadow is async)."""
    deadline = time.monotonic() + 60
    while True:
        counts = shadow_counts(server)
        if sum(counts.values()) >= images or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def test_shadow_answers_nothing_and_records_agreement(
    server: ServedService, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    plain = shared_server(request, tmp_path_factory.getbasetemp())  # same model, no shadow
    photos = [RED, BLUE, RED, BLUE, BLUE]
    answers = []
    for number, photo in enumerate(photos, start=1):
        answers.append(classify(server.url, photo))
        wait_for_shadow(server, number)  # one at a time: nothing is shed here
    for photo, answer in zip(photos, answers, strict=True):
        assert same_answer(answer) == same_answer(classify(plain.url, photo))
    assert [a["label"] for a in answers] == ["cup", "plate", "cup", "plate", "plate"]

    counts = shadow_counts(server)
    assert counts == {"agreements": 3, "disagreements:cup:glass": 2}, counts
    monitoring = Path(str(server.extra["base"])) / "monitoring"
    records = read_shadow_log(monitoring, "kitchenware_predictions")
    assert len(records) == len(photos)
    lines = [
        json.loads(line)
        for path in (monitoring / "kitchenware_predictions" / "data").glob("*.log")
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    own = [x for x in lines if x["kitchenware_request_id"] == answers[0]["request_id"]]
    assert sorted(x["record"] for x in own) == ["prediction", "shadow"]  # one line each
    logged = {r["kitchenware_request_id"]: r for r in records}
    for answer in answers:
        record = logged[answer["request_id"]]
        assert record["label"] == answer["label"] and record["model"] == answer["model"]
        assert record["shadow_model"] == server.extra["candidate"]
        expected = "glass" if answer["label"] == "cup" else answer["label"]
        assert record["shadow_label"] == expected and record["shadow_confidence"] > 0.5
        assert json.loads(record["probabilities"]) == answer["probabilities"]

    # A user corrects the first red photo to "glass": the candidate was right where it differed.
    sent = httpx.post(
        f"{server.url}/feedback",
        json={"request_id": answers[0]["request_id"], "label": "glass"},
        timeout=30,
    )
    assert sent.status_code == 200, sent.text
    store = FeedbackStore(f"sqlite:///{Path(str(server.extra['base'])) / 'feedback.db'}")
    try:
        summary = summarize_shadow(
            records, [str(server.extra["candidate"])], store.feedback_records()
        )
    finally:
        store.close()
    assert summary is not None
    assert (summary.photos, summary.changed, summary.corrected) == (5, 2, 1)
    assert (summary.candidate_right, summary.served_right) == (1, 0)


def test_a_burst_sheds_shadow_work_and_no_answer(server: ServedService) -> None:
    before = shadow_counts(server)
    # 16 clients: answers come back many per model call, offered to the shadow at once.
    photos = [RED, BLUE] * 24
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda photo: classify(server.url, photo), photos))
    assert [a["label"] for a in answers] == ["cup", "plate"] * 24  # every answer, unchanged
    after = wait_for_shadow(server, int(sum(before.values())) + len(photos))
    new = {k: after[k] - before.get(k, 0) for k in after}
    shed = sum(v for k, v in new.items() if k.startswith("shed"))
    assert shed > 0, new  # a queue of 2 images cannot take a burst of 48
    assert sum(new.values()) == len(photos), new  # each sampled image: shadowed or shed
