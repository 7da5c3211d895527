"""Stress test for a deployed kitchenware service: random images from a folder, both endpoints.

Headless against a local server (see README "Benchmarks"):

    locust -f bench/locustfile.py --headless --host http://127.0.0.1:3000 \
        --users 32 --spawn-rate 8 --run-time 2m

Every user uploads a random image to POST /classify (weight 4) or 2..--batch-size random
images to POST /classify_batch (weight 1) and waits for the answer before the next one.
A response counts as a failure unless it is a 200 whose JSON holds a label per image.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task

from kitchenware.runtime.preprocessing import IMAGE_SUFFIXES


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--images",
        default="",
        help="Folder of images to upload at random (default: the published model's 18 real "
        "photos, fetched and sha256-checked once by kitchenware.modelbuild.pretrained).",
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="Most images per /classify_batch request."
    )


_images: list[tuple[str, bytes]] = []


@events.test_start.add_listener
def load_images(environment: Any, **_: Any) -> None:
    """Read the folder once, before any user starts; a missing or empty folder stops the run."""
    if environment.parsed_options.images:
        folder = Path(environment.parsed_options.images)
    else:
        from kitchenware.modelbuild.pretrained import real_photos

        folder = real_photos().directory
    if not folder.is_dir():
        raise SystemExit(f"--images {folder} is not a folder; point --images at your photos.")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"--images {folder} holds no {', '.join(sorted(IMAGE_SUFFIXES))} files.")
    _images[:] = [(path.name, path.read_bytes()) for path in paths]


def _check(response: Any, expected_results: int) -> None:
    if response.status_code != 200:
        response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
        return
    body = response.json()
    results = body if isinstance(body, list) else body.get("results", [body])
    if len(results) != expected_results or not all("label" in r for r in results):
        response.failure(f"expected {expected_results} labelled results, got {str(body)[:200]}")
    else:
        response.success()


class KitchenwareUser(HttpUser):
    wait_time = between(0.0, 0.5)

    @task(4)
    def classify(self) -> None:
        name, data = random.choice(_images)
        with self.client.post(
            "/classify",
            files={"image": (name, data, "application/octet-stream")},
            name="/classify",
            catch_response=True,
        ) as response:
            _check(response, 1)

    @task(1)
    def classify_batch(self) -> None:
        count = random.randint(2, max(2, self.environment.parsed_options.batch_size))
        picked = random.choices(_images, k=count)
        files = [("images", (name, data, "application/octet-stream")) for name, data in picked]
        with self.client.post(
            "/classify_batch", files=files, name="/classify_batch", catch_response=True
        ) as response:
            _check(response, count)
