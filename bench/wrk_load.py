"""The lean load generator: wrk (C, one thread) posting the real photos as multipart.

The Python load generator (bench/loadgen.py, httpx) spends 2-3 ms of CPU per photo on the
same 2 cores as the server, and at concurrency 1 that time is also inside every measured
latency. wrk spends a few hundredths of that, so the served rate and p50 it measures are
the server's own. Bounded in time (`seconds`), loopback only; Debian package `wrk`
(deploy/system-packages.txt).

    python bench/wrk_load.py --url http://127.0.0.1:3000/classify --concurrency 16 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import real_photos
from loadgen import check_loopback

BOUNDARY = "kitchenware-bench-boundary"
# One prebuilt request per photo (built once per wrk thread), sent round-robin; `done`
# prints one JSON line: counts, errors by kind and latency percentiles in microseconds.
SCRIPT = r"""
local requests, n = {}, 0
init = function(args)
  for i, path in ipairs(args) do
    local f = assert(io.open(path, "rb")); local data = f:read("*a"); f:close()
    local body = "--BOUNDARY\r\nContent-Disposition: form-data; name=\"FIELD\"; filename=\"" ..
      i .. ".jpg\"\r\nContent-Type: image/jpeg\r\n\r\n" .. data .. "\r\n--BOUNDARY--\r\n"
    requests[i] = wrk.format("POST", nil,
      {["Content-Type"] = "multipart/form-data; boundary=BOUNDARY"}, body)
  end
end
request = function() n = n % #requests + 1; return requests[n] end
done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "errors": {"connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d}, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "mean_us": %.1f}\n', summary.requests, summary.duration, e.connect, e.read,
    e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    url: str,
    *,
    concurrency: int,
    seconds: float,
    photos: list[bytes],
    field_name: str = "image",
    cpu_probe: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """One closed-loop level with wrk: rate, latency, errors, server and wrk CPU per image."""
    check_loopback(url)
    wrk = wrk_path()
    if wrk is None:
        raise FileNotFoundError("wrk is not installed (deploy/system-packages.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="kitchenware-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(SCRIPT.replace("BOUNDARY", BOUNDARY).replace("FIELD", field_name))
        files = []
        for i, data in enumerate(photos):
            files.append(Path(tmp) / f"{i}.jpg")
            files[-1].write_bytes(data)
        command = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "60s"]
        command += ["-s", str(script), url, "--", *map(str, files)]
        cpu_before = cpu_probe() if cpu_probe else 0.0
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        cpu_used = cpu_probe() - cpu_before if cpu_probe else None
        assert process.stdout is not None and process.stderr is not None
        out, err = process.stdout.read().decode(), process.stderr.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.strip() or out.strip()}")
    stats = json.loads(out.strip().splitlines()[-1])
    errors = {kind: count for kind, count in stats["errors"].items() if count}
    ok = stats["requests"] - errors.get("status", 0)
    wall = stats["duration_us"] / 1e6
    return {
        "client": "wrk",
        "concurrency": concurrency,
        "requests": stats["requests"],
        "ok": ok,
        "wall_s": wall,
        "images_per_s": ok / wall if wall else 0.0,
        "latency_ms": {k: stats[f"{k}_us"] / 1000 for k in ("p50", "p90", "p99", "mean")},
        "errors": errors,
        "server_cpu_ms_per_image": 1000 * cpu_used / ok if cpu_used is not None and ok else None,
        "client_cpu_ms_per_image": 1000 * (usage.ru_utime + usage.ru_stime) / ok if ok else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:3000/classify")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--field", default="image", help="multipart field name")
    args = parser.parse_args(argv)
    result = run_wrk(
        args.url,
        concurrency=args.concurrency,
        seconds=args.seconds,
        photos=list(real_photos().values()),
        field_name=args.field,
    )
    print(json.dumps(result, indent=2))
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
