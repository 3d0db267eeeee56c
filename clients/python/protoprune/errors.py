"""The one exception the client raises for a refusal of the server."""

from __future__ import annotations

import json
from typing import Any


class ProtopruneError(Exception):
    """A refusal, in the server's one error shape ``{"error": {"code", "message", "details"}}``.

    ``status`` is the HTTP status (``None`` for a failure seen by the client alone: a failed job, a
    stream cut short), ``code`` the machine-readable code (``DATASET_NOT_FOUND``, ``RATE_LIMITED``,
    …), ``details`` the error's details (``field`` for a validation error, …) and ``retry_after``
    the server's ``Retry-After`` hint in seconds (429 and 503 always carry one).
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, status: int, body: bytes, retry_after: float | None) -> ProtopruneError:
        """The error a response carries; a body not in the error shape (a proxy's page) gives ``HTTP_<status>``."""
        try:
            error = json.loads(body)["error"]
            return cls(status, str(error["code"]), str(error.get("message", "")), error.get("details") or {}, retry_after)
        except (ValueError, KeyError, TypeError):
            text = body.decode("utf-8", "replace").strip()[:500]
            return cls(status, f"HTTP_{status}", text or "no error body", None, retry_after)
