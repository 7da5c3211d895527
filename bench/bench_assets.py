"""What every serving benchmark shares: paths, the real photos, percentiles, CPU facts.

Kept free of TensorFlow imports so the load-generating process stays light.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
# The lscpu flags that decide which OpenVINO kernels run (int8 via VNNI, bf16, AMX).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16")

if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` from a fresh clone without install
    sys.path.insert(0, str(REPO_ROOT))


def real_photos() -> dict[str, bytes]:
    """Photo id -> JPEG bytes: the published model's 18 real photos (~1000x750), from the
    project's sha256-checked copy of the wheel (kitchenware.modelbuild.pretrained)."""
    from kitchenware.modelbuild.pretrained import real_photos as checked_photos

    photos = checked_photos()
    return {photo_id: photos.path(photo_id).read_bytes() for photo_id in photos.ids}


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p90/p99 and mean of a list of durations, in milliseconds."""
    if not seconds:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan"), "mean": float("nan")}
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(values.mean())}


def cpu_facts(lscpu_text: str | None = None) -> dict[str, Any]:
    """lscpu's model name, the ISA flags that matter (AMX ones included), cores, load."""
    if lscpu_text is None:
        lscpu_text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in lscpu_text.splitlines())
    )
    flags = set(fields.get("Flags", "").split())
    return {
        "model_name": fields.get("Model name", "?"),
        "isa": {flag: flag in flags for flag in ISA_FLAGS}
        | {"amx": sorted(f for f in flags if f.startswith("amx"))},
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def describe_cpu(facts: dict[str, Any]) -> str:
    have = [flag for flag, present in facts["isa"].items() if flag != "amx" and present]
    amx = ",".join(facts["isa"]["amx"]) or "no amx"
    return f"{facts['model_name']} x{facts['cpus']}; {' '.join(have) or 'no avx2'}; {amx}"


def process_tree_cpu_s(root_pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and every descendant alive.

    CPU time per image barely moves when other jobs share the cores, unlike wall time.
    """
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # exited while we looked
            continue
        total += times.user + times.system
    return total


def threads_cpu_s(root_pid: int) -> dict[tuple[int, int], float]:
    """(process id, native thread id) -> CPU seconds so far, for every thread of a process
    and its descendants: the kernel's count, which (unlike py-spy's samples) does not count a
    thread waiting for a core."""
    out: dict[tuple[int, int], float] = {}
    root = psutil.Process(root_pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            for thread in process.threads():
                out[(process.pid, thread.id)] = thread.user_time + thread.system_time
        except psutil.Error:  # exited while we looked
            continue
    return out


def py_spy() -> str:
    """The py-spy executable (PATH, or beside this Python); `pip install py-spy`."""
    return shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def python_threads(root_pid: int) -> dict[tuple[int, int], str]:
    """(process id, native thread id) -> Python thread name, for every descendant of
    `root_pid`, from `py-spy dump` (threads Python did not start, e.g. OpenVINO's, are absent)."""
    names: dict[tuple[int, int], str] = {}
    for process in psutil.Process(root_pid).children(recursive=True):
        dump = subprocess.run(
            [py_spy(), "dump", "--pid", str(process.pid), "--nonblocking"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        for match in re.finditer(r'Thread (\S+) \(\w+\): "([^"]*)"', dump):
            names[(process.pid, int(match[1], 0))] = match[2]
    return names
