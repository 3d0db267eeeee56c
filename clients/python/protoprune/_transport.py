"""HTTP for the client: one connection per request, the error shape, and bounded retries of 429/503."""

from __future__ import annotations

import email.utils
import http.client
import json
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from .errors import ProtopruneError

QueryValue = str | int | float | bool | None
RETRYABLE_STATUSES = frozenset({429, 503})


def path(*segments: str) -> str:
    """``/v1/…`` from segments, each percent-encoded whole (a ``/`` in an external id stays in it)."""
    return "/v1/" + "/".join(quote(segment, safe="") for segment in segments)


def query_string(query: Mapping[str, QueryValue]) -> str:
    """``?a=1&b=true`` from the values that are not None; booleans as ``true`` / ``false``."""
    pairs = [(name, ("true" if value else "false") if isinstance(value, bool) else str(value)) for name, value in query.items() if value is not None]
    return f"?{urlencode(pairs)}" if pairs else ""


def json_body(value: Any) -> bytes:
    """Request JSON: UTF-8, no NaN or Infinity (which JSON does not have)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def json_text(value: Any) -> str:
    """Compact JSON text of a value for a query parameter (a metadata filter)."""
    return json_body(value).decode("utf-8")


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds from its delay-seconds or HTTP-date form; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Transport:
    """Sends requests to one base URL (``http://`` or ``https://``, optionally with a path prefix).

    A request that may safely be sent again (``idempotent``) is retried on 429 and 503 after the
    server's ``Retry-After`` (1, 2, 4, … seconds when it gives none), at most ``max_retries`` times
    and never when the wait would exceed ``max_retry_wait`` seconds; then the refusal is raised.
    """

    def __init__(self, url: str, api_key: str | None, timeout: float, max_retries: int, max_retry_wait: float, user_agent: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._max_retries = max_retries
        self._max_retry_wait = max_retry_wait
        self._headers = {"User-Agent": user_agent, "Connection": "close"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None

    def _connection(self) -> http.client.HTTPConnection:
        if self._ssl is not None:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def open(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
        idempotent: bool,
    ) -> http.client.HTTPResponse:
        """The response to a request, its body unread (the caller closes it); an error status raises ProtopruneError."""
        headers = {**self._headers, "Accept": accept}
        if content_type is not None:
            headers["Content-Type"] = content_type
        attempt = 0
        while True:
            connection = self._connection()
            try:
                connection.request(method, self._prefix + target, body=body, headers=headers)
                response = connection.getresponse()
            except BaseException:
                connection.close()
                raise
            if response.status < 400:
                return response
            with response:
                error = ProtopruneError.from_response(response.status, response.read(), parse_retry_after(response.getheader("Retry-After")))
            wait = error.retry_after if error.retry_after is not None else float(2**attempt)
            if not idempotent or error.status not in RETRYABLE_STATUSES or attempt >= self._max_retries or wait > self._max_retry_wait:
                raise error
            time.sleep(wait)
            attempt += 1

    def json(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        idempotent: bool,
    ) -> Any:
        """The decoded JSON answer of a request (None for an empty one, e.g. 204)."""
        with self.open(method, target, body=body, content_type=content_type, idempotent=idempotent) as response:
            data = response.read()
        return json.loads(data) if data else None
