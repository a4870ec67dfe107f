"""A circuit breaker per model backend: stop calling an endpoint that keeps failing.

- **closed**: calls go through; each run that ends in an ``UpstreamError`` after its retries
  counts one failure; ``APP_LLM_BREAKER_FAILURES`` failures within ``APP_LLM_BREAKER_WINDOW_S``
  open the breaker;
- **open**: the backend is skipped (the fallback chain goes to the next one, or the run fails
  fast with ``circuit_open``) until ``APP_LLM_BREAKER_COOLDOWN_S`` has passed;
- **half-open**: one probe run is let through; success closes the breaker, failure opens it again
  for another cooldown. While the probe runs, other runs skip the backend.

State is per process (``process_breakers()``): each worker process learns on its own, and a
restart closes every breaker. Only backend names, counts, codes and times are kept: no PHI.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from app.logging import event

if TYPE_CHECKING:
    from app.config import Settings

log = logging.getLogger(__name__)
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    def __init__(self, name: str, *, failures: int = 5, window_s: float = 300.0, cooldown_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.name = name
        self.failures, self.window_s, self.cooldown_s = failures, window_s, cooldown_s
        self.clock, self.wall = clock, wall
        self.state = CLOSED
        self._fails: deque[float] = deque()
        self._opened_at: float | None = None
        self.opened_wall: datetime | None = None
        self._probing = False
        self.last_error: str | None = None
        self.lock = threading.Lock()

    def _prune(self, now: float) -> None:
        while self._fails and now - self._fails[0] > self.window_s:
            self._fails.popleft()

    def allow(self) -> bool:
        """May a run call this backend now? An open breaker past its cooldown lets one probe through."""
        with self.lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN:
                if self._opened_at is not None and self.clock() - self._opened_at >= self.cooldown_s:
                    self.state, self._probing = HALF_OPEN, True
                    event(log, "agent.breaker_half_open", backend=self.name)
                    return True
                return False
            if self._probing:  # half-open: one probe at a time
                return False
            self._probing = True
            return True

    def record_success(self) -> None:
        with self.lock:
            if self.state != CLOSED:
                event(log, "agent.breaker_closed", backend=self.name)
            self.state, self._probing = CLOSED, False
            self._fails.clear()
            self._opened_at = self.opened_wall = None

    def record_failure(self, code: str = "upstream_error") -> None:
        with self.lock:
            now = self.clock()
            self.last_error = code
            if self.state == HALF_OPEN:
                self._open(now)
                return
            self._fails.append(now)
            self._prune(now)
            if self.state == CLOSED and len(self._fails) >= self.failures:
                self._open(now)

    def _open(self, now: float) -> None:
        self.state, self._probing = OPEN, False
        self._opened_at, self.opened_wall = now, self.wall()
        event(log, "agent.breaker_open", backend=self.name, count=len(self._fails), error_code=self.last_error)

    def retry_in_s(self) -> float | None:
        with self.lock:
            if self.state != OPEN or self._opened_at is None:
                return None
            return max(0.0, self.cooldown_s - (self.clock() - self._opened_at))

    def snapshot(self) -> dict[str, object]:
        """PHI-free state for /admin."""
        retry = self.retry_in_s()
        with self.lock:
            self._prune(self.clock())
            return {"backend": self.name, "state": self.state, "failures": len(self._fails),
                    "threshold": self.failures, "window_s": self.window_s, "cooldown_s": self.cooldown_s,
                    "opened_at": self.opened_wall.isoformat(timespec="seconds") if self.opened_wall else None,
                    "retry_in_s": None if retry is None else round(retry, 1), "last_error": self.last_error}


class BreakerBoard:
    """The breakers of one process, one per backend name, created on first use."""

    def __init__(self, *, failures: int = 5, window_s: float = 300.0, cooldown_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.failures, self.window_s, self.cooldown_s = failures, window_s, cooldown_s
        self.clock, self.wall = clock, wall
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **kw: object) -> BreakerBoard:
        return cls(failures=settings.llm_breaker_failures, window_s=settings.llm_breaker_window_s,
                   cooldown_s=settings.llm_breaker_cooldown_s, **kw)  # type: ignore[arg-type]

    def configure(self, settings: Settings) -> None:
        with self._lock:
            self.failures = settings.llm_breaker_failures
            self.window_s = settings.llm_breaker_window_s
            self.cooldown_s = settings.llm_breaker_cooldown_s
            for b in self._breakers.values():
                b.failures, b.window_s, b.cooldown_s = self.failures, self.window_s, self.cooldown_s

    def get(self, name: str) -> CircuitBreaker:
        with self._lock:
            if name not in self._breakers:
                self._breakers[name] = CircuitBreaker(name, failures=self.failures, window_s=self.window_s,
                                                      cooldown_s=self.cooldown_s, clock=self.clock, wall=self.wall)
            return self._breakers[name]

    def snapshot(self) -> list[dict[str, object]]:
        with self._lock:
            breakers = sorted(self._breakers.values(), key=lambda b: b.name)
        return [b.snapshot() for b in breakers]


_PROCESS: BreakerBoard | None = None
_PROCESS_LOCK = threading.Lock()


def process_breakers(settings: Settings | None = None) -> BreakerBoard:
    """This process's breakers (thresholds from ``settings`` when given)."""
    global _PROCESS  # noqa: PLW0603 - one board per process, by design (docs/agent.md)
    with _PROCESS_LOCK:
        if _PROCESS is None:
            _PROCESS = BreakerBoard.from_settings(settings) if settings is not None else BreakerBoard()
        elif settings is not None:
            _PROCESS.configure(settings)
        return _PROCESS
