"""How long `make retrain` takes from 100 corrections with the published Xception (issue 20).

Builds a SQLite feedback store holding 100 corrections (seeded crops, 25-50 % of each
side, of the 9 labelled real photos) through the project's FeedbackStore, then runs
`python -m kitchenware.training.retrain --promote` on a copy of a BentoML home, `--runs`
times against one feature cache (the first run fills it, the next ones read it), and
prints each run's wall clock, the child's CPU time and the retrain's own split.

    .venv/bin/python bench/retrain_time.py --bentoml-home bench/out/bentoml-home \
        --model kitchenware-xception:zd53ichrmkf24ax4 --runs 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_assets import REPO_ROOT, cpu_facts

CORRECTIONS = 100


def crops(photo: bytes, count: int, rng: random.Random) -> list[bytes]:
    """Random crops of 25-50 % of each side: close-ups a user might send as a correction."""
    from PIL import Image

    image = Image.open(io.BytesIO(photo)).convert("RGB")
    width, height = image.size
    found = []
    for _ in range(count):
        w, h = int(width * rng.uniform(0.25, 0.5)), int(height * rng.uniform(0.25, 0.5))
        x, y = rng.randint(0, width - w), rng.randint(0, height - h)
        buffer = io.BytesIO()
        image.crop((x, y, x + w, y + h)).save(buffer, "JPEG", quality=90)
        found.append(buffer.getvalue())
    return found


def build_store(folder: Path, seed: int) -> str:
    """A SQLite store with CORRECTIONS corrections spread evenly over the labelled photos."""
    from kitchenware.modelbuild.pretrained import real_photos
    from kitchenware.serving.feedback.store import open_store

    photos = real_photos()
    labelled = sorted(photos.labels.items())
    url = f"sqlite:///{folder / 'feedback.db'}"
    rng = random.Random(seed)
    with open_store(url) as store:
        for index, (photo_id, label) in enumerate(labelled):
            count = CORRECTIONS // len(labelled) + (index < CORRECTIONS % len(labelled))
            for crop in crops(photos.path(photo_id).read_bytes(), count, rng):
                store.add_feedback(label, image=crop)
        assert store.counts()["feedback"] == CORRECTIONS, store.counts()
    return url


def run_retrain(args: argparse.Namespace, url: str, work: Path, number: int) -> dict:
    """One retrain in a child process: wall clock, its CPU time, its own timings."""
    run_dir = work / f"run-{number}"
    command = [
        sys.executable, "-m", "kitchenware.training.retrain",
        "--model", args.model, "--url", url, "--promote",
        "--run-dir", str(run_dir), "--cache-dir", str(work / "feature-cache"),
    ]  # fmt: skip
    env = {**os.environ, "BENTOML_HOME": str(args.home_copy)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(work / f"run-{number}.log", "w") as log:
        code = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log).returncode
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads((run_dir / "report.json").read_text()) if code in (0, 1) else {}
    return {
        "run": number,
        "exit_code": code,
        "wall_s": round(wall, 1),
        "cpu_user_s": round(after.ru_utime - before.ru_utime, 1),
        "cpu_sys_s": round(after.ru_stime - before.ru_stime, 1),
        "max_rss_mb": round(after.ru_maxrss / 1024),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "split_s": {k: round(v, 1) for k, v in report.get("seconds", {}).items()},
        "passed": report.get("comparison", {}).get("passed"),
        # The runtime gate's own parts, as the conversion logs them.
        "gate_lines": [
            line.strip()
            for line in (work / f"run-{number}.log").read_text().splitlines()
            if "to OpenVINO IR in" in line or "quantized to int8" in line
        ],
        "log": str(work / f"run-{number}.log"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bentoml-home", type=Path, required=True, help="copied, never written")
    parser.add_argument("--model", required=True, help="the published model's tag in that home")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temp folder)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="retrain-time-"))
    work.mkdir(parents=True, exist_ok=True)
    args.home_copy = work / "bentoml-home"
    if not args.home_copy.exists():
        shutil.copytree(args.bentoml_home, args.home_copy, symlinks=True)
    url = build_store(work / "store", args.seed)
    results = {"cpu": cpu_facts(), "corrections": CORRECTIONS, "model": args.model, "runs": []}
    for number in range(1, args.runs + 1):
        result = run_retrain(args, url, work, number)
        results["runs"].append(result)
        print(json.dumps(result), flush=True)
    print(json.dumps(results["cpu"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
