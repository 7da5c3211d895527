"""The service's routes in one table: the upload rule each takes, whether it runs the model.

service.py's decorators, the admission gate, the upload gate and the task middleware all
read this table, so each route string is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

from kitchenware.serving.http.uploads import FileField
from kitchenware.serving.settings import ServiceSettings

CLASSIFY = "/classify"
CLASSIFY_BATCH = "/classify_batch"
FEEDBACK = "/feedback"
EXPLAIN = "/explain"
# BentoML serves a task at ROUTE (the sync call) and ROUTE/{submit,status,get,...}.
TASK = "/classify_batch_async"

FEEDBACK_FIELDS = FileField(
    "image",
    max_files=1,
    text_fields=("label", "request_id", "index", "note"),
    optional=True,
    accepts_forms=True,  # a correction by request id: JSON or a form, no file
)
EXPLAIN_FIELDS = FileField("image", max_files=1, text_fields=("label", "method"))


@dataclass(frozen=True)
class Route:
    path: str
    upload: FileField  # what the upload gate lets through on this route
    admitted: bool = True  # runs the model: the admission gate counts it
    task: bool = False  # a BentoML task: TaskRoutes carries its file names


def routes(settings: ServiceSettings) -> tuple[Route, ...]:
    """Every POST route of the service, with the limits the settings give it."""
    task_field = FileField(
        "images", max_files=settings.max_task_files, limit_setting="KITCHENWARE_MAX_TASK_FILES"
    )
    batch_field = FileField(
        "images", max_files=settings.max_batch_files, limit_setting="KITCHENWARE_MAX_BATCH_FILES"
    )
    return (
        Route(CLASSIFY, FileField("image", max_files=1)),
        Route(CLASSIFY_BATCH, batch_field),
        Route(FEEDBACK, FEEDBACK_FIELDS, admitted=False),
        Route(EXPLAIN, EXPLAIN_FIELDS),
        Route(TASK, task_field, task=True),
        Route(f"{TASK}/submit", task_field, task=True),
    )


def upload_rules(table: tuple[Route, ...]) -> dict[str, FileField]:
    return {route.path: route.upload for route in table}


def admitted_paths(table: tuple[Route, ...]) -> tuple[str, ...]:
    return tuple(route.path for route in table if route.admitted)


def task_paths(table: tuple[Route, ...]) -> frozenset[str]:
    return frozenset(route.path for route in table if route.task)
