"""One retry policy for every outbound HTTP call: FHIR, OAuth (discovery, token) and model endpoints.

Built on urllib3's ``Retry`` (urllib3 2.8.0, pinned by requests' dependency set
in requirements): the same object decides, for each attempt, whether to retry,
how long to wait (exponential backoff ``BACKOFF_FACTOR`` · 2^(n-1) plus jitter
up to ``JITTER_S``, at most ``BACKOFF_MAX_S``), and honours ``Retry-After``
(seconds or HTTP date) up to ``RETRY_AFTER_MAX_S``.

What is retried (``retry_safe``):

- idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE);
- a conditional create (POST with ``If-None-Exist``) and a transaction Bundle
  whose every POST entry carries ``ifNoneExist``: a retry cannot duplicate;
- calls the caller declares free of side effects on the server (a model call,
  a client_credentials token request).

An authorization-code or refresh-token request, or a plain POST, is sent once:
a lost answer is reported, never repeated. Connection errors before anything
was sent are retried for every method.

Retryable statuses: ``RETRYABLE`` = 408, 429, 500, 502, 503, 504 for all
endpoints; ``ANTHROPIC_RETRYABLE`` adds 529 (overloaded) for Anthropic.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import RequestHistory, Retry

from app.logging import event

log = logging.getLogger(__name__)

RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
ANTHROPIC_RETRYABLE = RETRYABLE | {529}
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
BACKOFF_FACTOR = 0.5
BACKOFF_MAX_S = 30.0
JITTER_S = 0.5
RETRY_AFTER_MAX_S = 60
DEFAULT_ATTEMPTS = 4

__all__ = ["ANTHROPIC_RETRYABLE", "RETRYABLE", "Policy", "not_sent", "policy", "retry_safe"]

T = TypeVar("T")


def retry_safe(method: str, headers: Mapping[str, str] | None = None, body: Any = None) -> bool:
    """True when repeating this request cannot create a second resource (see module docstring)."""
    method = method.upper()
    if method in IDEMPOTENT:
        return True
    if method != "POST":
        return False
    if any(k.lower() == "if-none-exist" and v for k, v in (headers or {}).items()):
        return True
    if isinstance(body, dict) and body.get("resourceType") == "Bundle" and body.get("type") in (
            "transaction", "batch"):
        entries = body.get("entry") or []
        return bool(entries) and all(
            (e.get("request") or {}).get("method", "").upper() in IDEMPOTENT
            or ((e.get("request") or {}).get("method", "").upper() == "POST"
                and (e.get("request") or {}).get("ifNoneExist"))
            for e in entries)
    return False


def not_sent(exc: BaseException) -> bool:
    """True when a ``requests`` call cannot have reached the server (connect timeout or refused)."""
    import requests

    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return type(reason).__name__ in ("NewConnectionError", "ConnectTimeoutError")
    return False


class _Resp:
    """What urllib3's ``Retry`` reads from a response: ``status`` and (case-insensitive) ``headers``."""

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        self.status = status
        self.headers = headers

    def get_redirect_location(self) -> bool:
        return False


class Policy:
    """The configured policy; ``run`` executes one call under it."""

    def __init__(self, *, attempts: int = DEFAULT_ATTEMPTS, statuses: frozenset[int] = RETRYABLE,
                 backoff_factor: float = BACKOFF_FACTOR, backoff_max: float = BACKOFF_MAX_S,
                 jitter: float = JITTER_S, retry_after_max: int = RETRY_AFTER_MAX_S,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.attempts = max(1, attempts)
        self.statuses = statuses
        self.sleep = sleep or (lambda s: time.sleep(s))  # looked up at call time (tests patch time.sleep)
        self.retry = Retry(total=self.attempts - 1, connect=self.attempts - 1, read=self.attempts - 1,
                           status=self.attempts - 1, other=0, redirect=0,
                           allowed_methods=None,  # decided by retry_safe per request, not by method
                           status_forcelist=statuses, backoff_factor=backoff_factor,
                           backoff_max=backoff_max, backoff_jitter=jitter, raise_on_status=False,
                           respect_retry_after_header=True, retry_after_max=retry_after_max)

    def delay(self, retry: Retry, status: int | None, headers: Mapping[str, str] | None) -> float:
        """Seconds before the next attempt: Retry-After (capped) when the server sent it, else backoff
        (urllib3's exponential formula, never below a jittered first step)."""
        if status is not None and headers is not None:
            try:
                after = retry.get_retry_after(_Resp(status, headers))  # type: ignore[arg-type]
            except InvalidHeader:
                after = None
            if after is not None:
                return float(min(after, self.retry.retry_after_max))
        backoff = float(retry.get_backoff_time())
        return max(backoff, self.retry.backoff_factor * (0.5 + random.random() * 0.5))  # noqa: S311

    @staticmethod
    def _next(retry: Retry, method: str, status: int | None, error: BaseException | None) -> Retry:
        return retry.new(total=retry.total - 1 if isinstance(retry.total, int) else retry.total,
                         history=(*retry.history, RequestHistory(method, None, error, status, None)))  # type: ignore[arg-type]

    def run(self, send: Callable[[], T], *, status_of: Callable[[T], int],
            headers_of: Callable[[T], Mapping[str, str]], safe: bool,
            is_connect_error: Callable[[BaseException], bool] = lambda _e: False,
            is_transient_error: Callable[[BaseException], bool] = lambda _e: False,
            on_retry: Callable[[T | None], None] | None = None,
            deadline: float | None = None, what: str = "http", method: str = "GET") -> T:
        """Call ``send`` until it succeeds, is not retryable, or the attempts or ``deadline`` run out.

        A response with a retryable status is returned after the last attempt
        (the caller turns it into an error). An exception is re-raised unless
        it is a connection error (any method) or a transient error (safe calls only).
        """
        retry = self.retry.new()
        attempt = 0
        while True:
            attempt += 1
            try:
                out = send()
            except Exception as exc:
                retryable = is_connect_error(exc) or (safe and is_transient_error(exc))
                if not retryable or attempt >= self.attempts:
                    raise
                retry = self._next(retry, method, None, exc)
                wait = self.delay(retry, None, None)
                if deadline is not None and time.monotonic() + wait > deadline:
                    raise
                event(log, "http.retry", attempt=attempt, retry_in_s=round(wait, 2), code=what,
                      error_code=type(exc).__name__)
                self.sleep(wait)
                continue
            status = status_of(out)
            if not safe or status not in self.statuses or attempt >= self.attempts:
                return out
            headers = headers_of(out)
            retry = self._next(retry, method, status, None)
            wait = self.delay(retry, status, headers)
            if deadline is not None and time.monotonic() + wait > deadline:
                return out
            event(log, "http.retry", attempt=attempt, retry_in_s=round(wait, 2), http_status=status, code=what)
            if on_retry is not None:
                on_retry(out)
            self.sleep(wait)


def policy(*, attempts: int = DEFAULT_ATTEMPTS, anthropic: bool = False,
           sleep: Callable[[float], None] | None = None) -> Policy:
    """The app's policy; ``anthropic`` adds 529 overloaded to the retryable statuses."""
    return Policy(attempts=attempts, statuses=ANTHROPIC_RETRYABLE if anthropic else RETRYABLE, sleep=sleep)
