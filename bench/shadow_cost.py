"""What shadow mode costs the answers: the same server with and without a candidate in shadow.

Variants run interleaved, round by round (they see the same background load): `off`, then
`on` at each --sample. Each serves the model in $BENTOML_HOME (KITCHENWARE_MODEL_TAG) on
the 18 real photos at c=1 and c=16 and reports req/s, p50/p99, server CPU per image, and,
with shadow on, how many sampled images the candidate answered and how many were shed.

    .venv/bin/python bench/shadow_cost.py --candidate kitchenware-xception-candidate:<version>

The candidate is any stored tag with the served model's classes and input size (a retrain
staged with `--stage`; for a cost figure the published model imported under another name).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from pathlib import Path

import httpx
from bench_assets import cpu_facts, describe_cpu, process_tree_cpu_s, real_photos
from loadgen import run_load

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from kitchenware.localserver import free_port, running  # noqa: E402

SHADOW_LINE = re.compile(r"^kitchenware_shadow_(agreements|disagreements|shed)_total\{.*\} (\S+)$")


def shadow_counts(url: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        match = SHADOW_LINE.match(line)
        if match:
            key = "shadowed" if match.group(1) != "shed" else "shed"
            counts[key] = counts.get(key, 0.0) + float(match.group(2))
    return counts


def wait_for_candidate(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not re.search(
        r"^kitchenware_shadow_ready\{.*\} 1\.0$", httpx.get(f"{url}/metrics").text, re.M
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the shadow candidate did not load; see the server log")
        time.sleep(0.5)


def measure(
    variant: str, env: dict[str, str], args: argparse.Namespace, photos: list[bytes]
) -> list[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).parent / "bentoml"),
        "serve",
        "service:Kitchenware",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log = Path(args.log_dir) / f"serve-{variant}-{port}.log"
    rows = []
    with running(
        command, ready_url=f"{url}/readyz", log_path=log, env=env, cwd=REPO, timeout=300
    ) as (process, _):
        if env.get("KITCHENWARE_SHADOW_MODEL_TAG"):
            wait_for_candidate(url)
        for concurrency, requests in ((1, args.requests_c1), (16, args.requests_c16)):
            before = shadow_counts(url)
            result = asyncio.run(
                run_load(
                    f"{url}/classify",
                    concurrency=concurrency,
                    requests=requests,
                    images=photos,
                    warmup_requests=8,
                    cpu_probe=lambda: process_tree_cpu_s(process.pid),
                )
            )
            after = shadow_counts(url)
            delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("shadowed", "shed")}
            shadow = (
                f"{delta['shadowed']:.0f} / {delta['shed']:.0f}"
                if env.get("KITCHENWARE_SHADOW_MODEL_TAG")
                else "—"
            )
            latency = result.latency_ms
            cells = [
                variant,
                str(concurrency),
                f"{result.req_per_s:.1f}",
                f"{latency['p50']:.0f}",
                f"{latency['p99']:.0f}",
                f"{result.server_cpu_ms_per_image or float('nan'):.1f}",
                shadow,
                str(result.errors or 0),
                f"{os.getloadavg()[0]:.1f}",
            ]
            rows.append("| " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", required=True, help="stored tag to run in shadow")
    parser.add_argument(
        "--sample", type=float, action="append", help="shadow share(s); default 0.25"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests-c1", type=int, default=120)
    parser.add_argument("--requests-c16", type=int, default=320)
    parser.add_argument("--log-dir", default="bench/out/shadow_cost")
    args = parser.parse_args(argv)
    photos = list(real_photos().values())
    base = {k: v for k, v in os.environ.items() if not k.startswith("KITCHENWARE_SHADOW")}
    monitoring = Path(args.log_dir).resolve() / "monitoring"
    option = f"services.kitchenware.monitoring.options.log_path={monitoring}"
    base.setdefault("BENTOML_CONFIG_OPTIONS", option)
    variants = [("off", base)] + [
        (
            f"on {sample:g}",
            {
                **base,
                "KITCHENWARE_SHADOW_MODEL_TAG": args.candidate,
                "KITCHENWARE_SHADOW_SAMPLE": str(sample),
            },
        )
        for sample in (args.sample or [0.25])
    ]
    print(describe_cpu(cpu_facts()))
    columns = "variant c req/s p50_ms p99_ms server_CPU_ms/img shadowed/shed errors load"
    print("| " + " | ".join(c.replace("_", " ") for c in columns.split()) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for _ in range(args.rounds):
        for variant, env in variants:
            measure(variant, env, args, photos)
    return 0


if __name__ == "__main__":
    sys.exit(main())
