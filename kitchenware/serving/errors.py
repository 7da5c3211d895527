"""Client errors the service answers itself: a status, a metrics reason and one sentence."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """A request refused with `status_code`; `reason` is the short code and metrics label."""

    def __init__(self, status_code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.reason = reason
        self.message = message
        self.details = details  # extra JSON fields, e.g. the limit or the field

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "reason": self.reason, **self.details}
