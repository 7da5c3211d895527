"""The feedback store fails underneath a served instance, each fault for real, while 4 clients
classify real photos: what the clients saw, what was lost, how long recovery took. One row
per fault; loopback only, bounded (a few seconds of fault each). Needs root (tmpfs mounts,
chattr +i) and PostgreSQL's binaries for the PostgreSQL rows.

    python bench/store_faults.py                       # every fault, published model
    python bench/store_faults.py --faults sqlite-locked,disk-full --fault-seconds 12

Per fault, a fresh `bentoml serve` (the store location is a start-up setting):
  1. traffic: `--clients` closed-loop clients on /classify for the whole run;
  2. before: a correction by request id and one with a photo (both must be 200);
  3. the fault for `--fault-seconds`: a correction every second, by id or with a photo
     (status, Retry-After, the sentence, how long it took);
  4. the fault cleared: recovery = until a fresh prediction's correction by id is 200;
  5. after: corrections by id of predictions made during the fault (200 kept / 409 not kept /
     404 would be false), then the store itself is read: every acknowledged correction must
     be there; predictions answered during the fault are counted kept, marked not kept, or
     neither; `kitchenware_predictions_not_kept_total` from /metrics as a cross-check.
The faults mirror tests/serving/test_store_faults.py and use its helpers (tests/support).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import REPO_ROOT, cpu_facts, describe_cpu, percentiles_ms, real_photos
from loadgen import Answer, closed_loop, loopback_client
from servers import running_service

sys.path.insert(0, str(REPO_ROOT / "tests"))
from support.faults import fill, lock_sqlite, set_immutable, small_tmpfs
from support.postgres import postgres_cluster

from kitchenware.serving.feedback.schema import feedback, predictions, unkept_predictions
from kitchenware.serving.feedback.store import engine_url

LABELS = ["cup", "glass", "plate", "spoon", "fork", "knife"]
RECOVERY_TIMEOUT_S = 90.0


@dataclass
class FaultSetup:
    """One fault ready to run: the store settings, how to cause and clear it, and whether it
    is already there when the server starts."""

    settings: dict[str, str]
    cause: Callable[[], None]
    clear: Callable[[], None]
    at_start: bool = False


def sqlite_settings(folder: Path) -> dict[str, str]:
    return {"KITCHENWARE_FEEDBACK_URL": f"sqlite:///{folder}/feedback.db"}


def postgres_settings(url: str, scratch: Path) -> dict[str, str]:
    return {
        "KITCHENWARE_FEEDBACK_URL": url,
        "KITCHENWARE_FEEDBACK_IMAGES_DIR": str(scratch / "images"),
    }


@contextlib.contextmanager
def postgres_stopped(scratch: Path) -> Iterator[FaultSetup]:
    with postgres_cluster() as cluster:
        yield FaultSetup(postgres_settings(cluster.url, scratch), cluster.stop, cluster.start)


@contextlib.contextmanager
def postgres_frozen(scratch: Path) -> Iterator[FaultSetup]:
    with postgres_cluster() as cluster:
        yield FaultSetup(
            postgres_settings(cluster.url, scratch),
            lambda: cluster.signal(signal.SIGSTOP),
            lambda: cluster.signal(signal.SIGCONT),
        )


@contextlib.contextmanager
def sqlite_locked(scratch: Path) -> Iterator[FaultSetup]:
    held: list[Any] = []

    def cause() -> None:
        held.append(lock_sqlite(scratch / "feedback.db"))

    def clear() -> None:
        locker = held.pop()
        locker.execute("ROLLBACK")
        locker.close()

    yield FaultSetup(sqlite_settings(scratch), cause, clear)


@contextlib.contextmanager
def disk_full(scratch: Path) -> Iterator[FaultSetup]:
    # 16 MB holds the 18 real photos (kept once each, by sha256) and the database.
    with small_tmpfs(scratch / "disk", size="16m") as disk:

        def cause() -> None:
            fill(disk)

        yield FaultSetup(sqlite_settings(disk), cause, (disk / "filler").unlink)


@contextlib.contextmanager
def immutable_folder(scratch: Path) -> Iterator[FaultSetup]:
    store = scratch / "store"
    try:
        yield FaultSetup(
            sqlite_settings(store),
            lambda: set_immutable(store, True, recursive=True),
            lambda: set_immutable(store, False, recursive=True),
        )
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            set_immutable(store, False, recursive=True)


@contextlib.contextmanager
def unwritable_at_start(scratch: Path) -> Iterator[FaultSetup]:
    store = scratch / "store"
    store.mkdir()
    try:
        yield FaultSetup(
            sqlite_settings(store),
            lambda: set_immutable(store, True),
            lambda: set_immutable(store, False),
            at_start=True,
        )
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            set_immutable(store, False)


FAULTS: dict[str, Callable[[Path], contextlib.AbstractContextManager[FaultSetup]]] = {
    "postgres-stopped": postgres_stopped,
    "postgres-frozen": postgres_frozen,
    "sqlite-locked": sqlite_locked,
    "disk-full": disk_full,
    "immutable-folder": immutable_folder,
    "unwritable-at-start": unwritable_at_start,
}


@dataclass
class Prediction:
    sent_at: float  # monotonic
    seconds: float
    status: str
    request_id: str


@dataclass
class FeedbackTry:
    at_s: float  # since the fault began
    kind: str  # "id" or "photo"
    status: int
    seconds: float
    retry_after: str | None
    sentence: str


@dataclass
class FaultRow:
    fault: str
    at_start: bool  # then classify_before holds the answers after the fault cleared
    fault_s: float
    classify_before: dict[str, Any]  # statuses, p50/p99/max ms
    classify_during: dict[str, Any]
    feedback_during: dict[str, Any]  # statuses, Retry-After values, slowest, one sentence
    acknowledged: int  # corrections answered 200 over the whole run
    acknowledged_lost: int  # of those, not in the store at the end
    during_predictions: int  # /classify 200s answered during the fault
    during_kept: int
    during_marked_not_kept: int  # a correction by id gets 409 "not kept (...)"
    during_unaccounted: int  # neither: a correction would meet a false 404
    later_corrections: dict[str, int]  # corrections by id of during-fault predictions, after
    not_kept_metric: dict[str, float]  # kitchenware_predictions_not_kept_total by reason
    recovery_s: float | None  # fault cleared -> first fresh prediction corrected by id
    fault_log_lines: int  # "... is failing (" lines
    log_warnings: int  # ERROR / WARNING / Traceback lines in the server log during the run
    workers_restarted: bool
    load_average: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency_summary(answers: list[Prediction]) -> dict[str, Any]:
    statuses = Counter(answer.status for answer in answers)
    ok = [answer.seconds for answer in answers if answer.status == "200"]
    ms = percentiles_ms(ok)
    return {
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": round(ms["p50"], 1),
        "p99_ms": round(ms["p99"], 1),
        "max_ms": round(1000 * max(ok), 1) if ok else None,
    }


def feedback_summary(tries: list[FeedbackTry]) -> dict[str, Any]:
    return {
        "statuses": dict(sorted(Counter(f"{t.kind} {t.status}" for t in tries).items())),
        "retry_after": sorted({t.retry_after or "none" for t in tries}),
        "slowest_ms": round(1000 * max((t.seconds for t in tries), default=0.0), 1),
        "sentences": sorted({t.sentence for t in tries if t.sentence}),
    }


def not_kept_metric(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "kitchenware_predictions_not_kept":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    reason = sample.labels.get("reason", "")
                    counts[reason] = counts.get(reason, 0.0) + sample.value
    return counts


def worker_pids(pid: int) -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process(pid).children(recursive=True)}


class Run:
    """One fault against one served instance: traffic, probes, timings."""

    def __init__(self, url: str, photos: list[bytes], clients: int) -> None:
        self.url = url
        self.photos = photos
        self.clients = clients
        self.predictions: list[Prediction] = []
        self.tries: list[FeedbackTry] = []
        self.acknowledged: list[int] = []
        self.fault_at = self.cleared_at = 0.0
        self.stop = False

    async def traffic(self) -> None:
        async def record(answer: Answer) -> None:
            request_id = answer.response.headers.get("x-request-id", "") if answer.response else ""
            sent = time.monotonic() - answer.seconds
            self.predictions.append(Prediction(sent, answer.seconds, answer.outcome, request_id))

        async with loopback_client(self.url, self.clients, timeout_s=60.0) as client:
            await closed_loop(
                client,
                self.url + "/classify",
                clients=self.clients,
                images=self.photos,
                more=lambda _: not self.stop,
                on_answer=record,
            )

    async def correct(
        self, client: httpx.AsyncClient, n: int, request_id: str | None = None
    ) -> httpx.Response:
        """A correction by request id, or (no id) one that sends a photo; 200s are noted as
        acknowledged."""
        label = LABELS[n % len(LABELS)]
        if request_id:
            files: Any = {"request_id": (None, request_id), "label": (None, label)}
        else:
            photo = self.photos[n % len(self.photos)]
            files = {"image": ("p.jpg", photo, "image/jpeg"), "label": (None, label)}
        answer = await client.post(self.url + "/feedback", files=files)
        if answer.status_code == 200:
            self.acknowledged.append(answer.json()["feedback_id"])
        return answer

    async def probe(self, client: httpx.AsyncClient, n: int, kind: str) -> None:
        request_id = self.latest_prediction(after=self.fault_at) if kind == "id" else None
        if kind == "id" and not request_id:
            return
        started = time.monotonic()
        answer = await self.correct(client, n, request_id)
        sentence = answer.json().get("error", "") if answer.status_code != 200 else ""
        self.tries.append(
            FeedbackTry(
                round(started - self.fault_at, 2),
                kind,
                answer.status_code,
                time.monotonic() - started,
                answer.headers.get("retry-after"),
                sentence,
            )
        )

    def latest_prediction(self, after: float) -> str:
        for prediction in reversed(self.predictions):
            if prediction.status == "200" and prediction.sent_at >= after:
                return prediction.request_id
        return ""

    async def recover(self, client: httpx.AsyncClient) -> float | None:
        """Seconds from the fault's clearing until a fresh prediction is corrected by id."""
        n = 0
        while time.monotonic() - self.cleared_at < RECOVERY_TIMEOUT_S:
            n += 1
            photo = self.photos[n % len(self.photos)]
            answer = await client.post(
                self.url + "/classify", files={"image": ("r.jpg", photo, "image/jpeg")}
            )
            request_id = answer.headers.get("x-request-id", "")
            if answer.status_code == 200 and (await self.correct(client, n, request_id)).is_success:
                return time.monotonic() - self.cleared_at
            await asyncio.sleep(0.2)
        return None

    async def script(self, setup: FaultSetup, before_s: float, fault_s: float) -> float | None:
        async with httpx.AsyncClient(timeout=60.0, trust_env=False) as client:
            if setup.at_start:
                self.fault_at = time.monotonic() - 1e-3  # the fault was there before traffic
            else:
                await asyncio.sleep(before_s)
                first = self.latest_prediction(after=0.0)
                for answer in (await self.correct(client, 0, first), await self.correct(client, 1)):
                    if answer.status_code != 200:
                        raise RuntimeError(f"/feedback before the fault: {answer.text}")
                await asyncio.to_thread(setup.cause)
                self.fault_at = time.monotonic()
            n = 2
            while time.monotonic() - self.fault_at < fault_s:
                await self.probe(client, n, "id" if n % 2 else "photo")
                n += 1
                await asyncio.sleep(1.0)
            await asyncio.to_thread(setup.clear)
            self.cleared_at = time.monotonic()
            recovery = await self.recover(client)
            await asyncio.sleep(3.0)
            self.stop = True
            return recovery

    async def later_corrections(self, sample: int = 20) -> Counter[str]:
        """Corrections by id of predictions made during the fault, once it cleared."""
        during = self.during()
        picked = during[:: max(1, len(during) // sample)][:sample]
        outcomes: Counter[str] = Counter()
        async with httpx.AsyncClient(timeout=60.0, trust_env=False) as client:
            for n, prediction in enumerate(picked):
                answer = await self.correct(client, n, prediction.request_id)
                reason = answer.json().get("reason", "") if answer.status_code != 200 else ""
                outcomes[f"{answer.status_code} {reason}".strip()] += 1
        return outcomes

    def during(self) -> list[Prediction]:
        return [
            p
            for p in self.predictions
            if p.status == "200"
            and self.fault_at <= p.sent_at
            and p.sent_at + p.seconds <= self.cleared_at
        ]


def store_facts(url: str, acknowledged: list[int], during: list[str]) -> tuple[int, int, int]:
    """(acknowledged corrections missing, during-fault predictions kept, marked not kept)."""
    engine = sa.create_engine(engine_url(url))
    try:
        with engine.connect() as connection:
            stored: set[int] = set(connection.scalars(sa.select(feedback.c.id)))
            kept: set[str] = set(connection.scalars(sa.select(predictions.c.request_id)))
            marked: set[str] = set(connection.scalars(sa.select(unkept_predictions.c.request_id)))
    finally:
        engine.dispose()
    return (
        sum(1 for feedback_id in acknowledged if feedback_id not in stored),
        sum(1 for request_id in during if request_id in kept),
        sum(1 for request_id in during if request_id in marked and request_id not in kept),
    )


def run_fault(
    name: str, tag: str, home: Path, photos: list[bytes], args: argparse.Namespace
) -> FaultRow:
    with (
        tempfile.TemporaryDirectory(prefix=f"fault-{name}-") as scratch_name,
        FAULTS[name](Path(scratch_name)) as setup,
    ):
        if setup.at_start:
            setup.cause()
        with running_service(tag, home, setup.settings, name=f"fault-{name}") as server:
            workers = worker_pids(server.process.pid)
            run = Run(server.base_url, photos, args.clients)

            async def both() -> float | None:
                traffic = asyncio.create_task(run.traffic())
                recovery = await run.script(setup, args.before_seconds, args.fault_seconds)
                await traffic
                return recovery

            lines_at_start = len(server.log_path.read_text(errors="replace").splitlines())
            recovery = asyncio.run(both())
            log = server.log_path.read_text(errors="replace")
            later = asyncio.run(run.later_corrections())
            metric = not_kept_metric(server.base_url)
            restarted = worker_pids(server.process.pid) != workers
            during = run.during()
            lost, kept, marked = store_facts(
                setup.settings["KITCHENWARE_FEEDBACK_URL"],
                run.acknowledged,
                [p.request_id for p in during],
            )
    before = [p for p in run.predictions if p.sent_at + p.seconds < run.fault_at]
    if setup.at_start:  # no "before": compare with the answers after the fault cleared
        before = [p for p in run.predictions if p.sent_at > run.cleared_at]
    return FaultRow(
        fault=name,
        at_start=setup.at_start,
        fault_s=round(run.cleared_at - run.fault_at, 1),
        classify_before=latency_summary(before),
        classify_during=latency_summary(
            [p for p in run.predictions if run.fault_at <= p.sent_at <= run.cleared_at]
        ),
        feedback_during=feedback_summary(run.tries),
        acknowledged=len(run.acknowledged),
        acknowledged_lost=lost,
        during_predictions=len(during),
        during_kept=kept,
        during_marked_not_kept=marked,
        during_unaccounted=len(during) - kept - marked,
        later_corrections=dict(sorted(later.items())),
        not_kept_metric=metric,
        recovery_s=round(recovery, 2) if recovery is not None else None,
        fault_log_lines=log.count("is failing ("),
        log_warnings=sum(
            1
            for line in log.splitlines()[lines_at_start:]
            if "[ERROR]" in line or "[WARNING]" in line or "Traceback" in line
        ),
        workers_restarted=restarted,
        load_average=[round(x, 2) for x in os.getloadavg()],
    )


def markdown_row(row: FaultRow) -> str:
    during, before = row.classify_during, row.classify_before
    statuses = " ".join(f"{n} x {s}" for s, n in during["statuses"].items())
    fb = row.feedback_during
    feedback_statuses = ", ".join(f"{n} x {s}" for s, n in fb["statuses"].items())
    return (
        f"| {row.fault} | {row.fault_s} s | {statuses}; p50 {during['p50_ms']:.0f} "
        f"({'after' if row.at_start else 'before'} {before['p50_ms']:.0f}) / "
        f"p99 {during['p99_ms']:.0f} ms | {feedback_statuses}; "
        f"Retry-After {'/'.join(fb['retry_after'])}; slowest {fb['slowest_ms']:.0f} ms | "
        f"{row.acknowledged_lost} of {row.acknowledged} | "
        f"{row.during_predictions - row.during_kept} of {row.during_predictions} "
        f"({row.during_marked_not_kept} marked, {row.during_unaccounted} unmarked) | "
        f"{row.recovery_s} s | {row.fault_log_lines} / {row.log_warnings} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"of {', '.join(FAULTS)}")
    parser.add_argument("--fault-seconds", type=float, default=12.0)
    parser.add_argument("--before-seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=4, help="closed-loop /classify clients")
    parser.add_argument("--model-tag", help="model to serve (default: the service's default)")
    parser.add_argument(
        "--bentoml-home", type=Path, default=Path(os.environ.get("BENTOML_HOME", "~/bentoml"))
    )
    args = parser.parse_args(argv)
    from kitchenware.serving.settings import ServiceSettings

    tag = args.model_tag or ServiceSettings().model_tag
    home = args.bentoml_home.expanduser()
    photos = list(real_photos().values())
    facts = cpu_facts()
    print(f"# CPU: {describe_cpu(facts)}; load {facts['loadavg']}; model {tag}", flush=True)
    rows = []
    for name in args.faults.split(","):
        row = run_fault(name, tag, home, photos, args)
        print(json.dumps(row.as_dict()), flush=True)
        rows.append(row)
    print(
        "\n| fault | held | /classify during (ms) | /feedback during | acknowledged lost | "
        "predictions not kept | recovery | fault lines / warnings |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(markdown_row(row))
    return 0 if all(row.acknowledged_lost == 0 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
