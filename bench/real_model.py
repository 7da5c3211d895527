"""The published kitchenware Xception as the served default: the numbers issue 9 asks for.

One run, on a fresh wheel cache and a fresh BentoML store:
1. download + import time (`python -m kitchenware.modelbuild.pretrained import`, fresh cache);
2. cold start of `bentoml serve service:Kitchenware` to /readyz 200 (default settings);
3. RSS of the server's processes (the model worker is the big one);
4. accuracy on the 9 labelled photos over HTTP, predictions on the 9 unlabelled;
5. latency at concurrency 1 with a real 1000x750 photo (0192.jpg), interleaved request by
   request with the same bytes decoded + predicted in this process (the raw model), so the
   ratio sees the same background load.

    .venv/bin/python bench/real_model.py --requests 40
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out"
LATENCY_PHOTO = "0192"  # 1000x750


def rss_mb(root_pid: int) -> dict[int, float]:
    from kitchenware.localserver import descendants, process_table

    sizes = {}
    for pid in descendants(process_table(), root_pid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes[pid] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="c=1 requests (and raw runs)")
    args = parser.parse_args()
    from kitchenware.localserver import free_port, running

    scratch = Path(tempfile.mkdtemp(prefix="kitchenware-bench-real-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KITCHENWARE_")}
    env.update(BENTOML_HOME=str(scratch / "bentoml"), BENTOML_DO_NOT_TRACK="True")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    load = os.getloadavg()
    report: dict[str, object] = {"load_average_start": [round(x, 2) for x in load]}

    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kitchenware.modelbuild.pretrained",
            "import",
            "--cache",
            str(scratch / "cache"),
            "--photos",
            str(scratch / "photos"),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    report["fresh_download_and_import_s"] = round(time.perf_counter() - started, 1)
    report["import_output"] = done.stdout.strip().splitlines()[0]

    from kitchenware.modelbuild.pretrained import load_photos
    from kitchenware.runtime.backends import load_backend
    from kitchenware.runtime.preprocessing import preprocess_bytes

    photos = load_photos(scratch / "photos")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "bentoml"), "serve", "service:Kitchenware"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    with running(
        command,
        ready_url=f"{url}/readyz",
        log_path=scratch / "serve.log",
        env=env,
        cwd=REPO,
        timeout=600,
    ) as (process, _):
        report["cold_start_to_readyz_s"] = round(time.perf_counter() - started, 1)
        with httpx.Client(timeout=120, trust_env=False) as client:
            answers = {}
            for photo_id in photos.ids:
                data = photos.path(photo_id).read_bytes()
                body = client.post(
                    f"{url}/classify", files={"image": (f"{photo_id}.jpg", data)}
                ).json()
                answers[photo_id] = (body["label"], round(body["confidence"], 3))
            model_tag = body["model"]
            correct = sum(answers[i][0] == label for i, label in photos.labels.items())
            report["model"] = model_tag
            report["labelled_accuracy"] = f"{correct}/{len(photos.labels)}"
            report["labelled"] = {i: [photos.labels[i], *answers[i]] for i in photos.labels}
            report["unlabelled"] = {i: answers[i] for i in photos.unlabelled}

            name, version = model_tag.split(":")
            raw = load_backend(scratch / "bentoml" / "models" / name / version)
            raw.warm_up()
            data = photos.path(LATENCY_PHOTO).read_bytes()
            served_s, raw_s = [], []
            for _ in range(3):  # warm both paths
                client.post(f"{url}/classify", files={"image": ("p.jpg", data)})
            for _ in range(args.requests):
                t = time.perf_counter()
                response = client.post(f"{url}/classify", files={"image": ("p.jpg", data)})
                served_s.append(time.perf_counter() - t)
                assert response.status_code == 200, response.text
                t = time.perf_counter()
                raw.predict_arrays(preprocess_bytes(data, raw.image_size))
                raw_s.append(time.perf_counter() - t)
        sizes = rss_mb(process.pid)
        report["rss_mb"] = {str(pid): round(mb) for pid, mb in sorted(sizes.items())}
        report["largest_process_rss_mb"] = round(max(sizes.values()))
        report["rss_of_this_bench_process_mb"] = round(rss_mb(os.getpid())[os.getpid()])

    def ms(values: list[float], q: float) -> float:
        return round(1000 * statistics.quantiles(values, n=100)[int(q) - 1], 1)

    report["latency_photo"] = f"{LATENCY_PHOTO}.jpg 1000x750, {len(data):,} bytes"
    report["served_c1_ms"] = {"p50": ms(served_s, 50), "p90": ms(served_s, 90)}
    report["raw_in_process_ms"] = {"p50": ms(raw_s, 50), "p90": ms(raw_s, 90)}
    report["served_over_raw_p50"] = round(statistics.median(served_s) / statistics.median(raw_s), 2)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "real_model.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
