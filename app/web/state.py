"""Per-process state of launched sessions: pending launches, open charts, drafts.

Charts and drafts hold PHI in memory only for the life of the launch session;
``drop`` removes them at logout or expiry. One process (gunicorn with threads,
one worker) serves a session; docs/operations.md says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.agent.runtime import Draft
from app.retrieval.indexer import PatientChart
from app.smart.discovery import SmartConfiguration
from app.smart.launch import PendingLaunch


@dataclass
class RunJob:
    """A drafting run started from the page: runs in a thread; can be cancelled before it writes."""

    key: str
    task: str
    state: str = "running"  # running | writing | done | failed | cancelled
    run_id: str | None = None
    error_code: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)  # cancel vs. start of the write
    started: float = field(default_factory=time.monotonic)


@dataclass
class LaunchState:
    sid: str
    fhir_base: str
    config: SmartConfiguration | None
    patient_id: str
    user_reference: str | None
    role: str
    encounter_id: str | None = None
    need_patient_banner: bool = False
    smart_style_url: str | None = None
    chart: PatientChart | None = None
    index_thread: threading.Thread | None = None
    drafts: dict[str, Draft] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)  # run_id -> write-back result
    unauthenticated: bool = False
    style_css: str | None = None  # the EHR's smart_style_url as CSS, fetched once
    jobs: dict[str, RunJob] = field(default_factory=dict)
    reviews: dict[str, list[dict]] = field(default_factory=dict)  # run_id -> review events
    created: float = field(default_factory=time.time)


class WebState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pending: dict[str, PendingLaunch] = {}  # browser nonce -> pending launch
        self.sessions: dict[str, LaunchState] = {}

    def put_pending(self, key: str, pending: PendingLaunch) -> None:
        with self._lock:
            now = time.time()
            self.pending = {k: v for k, v in self.pending.items() if not v.expired(now)}
            self.pending[key] = pending

    def take_pending(self, key: str | None) -> PendingLaunch | None:
        if not key:
            return None
        with self._lock:
            return self.pending.pop(key, None)  # single use

    def get(self, sid: str | None) -> LaunchState | None:
        if not sid:
            return None
        with self._lock:
            return self.sessions.get(sid)

    def put(self, state: LaunchState) -> None:
        with self._lock:
            self.sessions[state.sid] = state

    def drop(self, sid: str) -> None:
        with self._lock:
            self.sessions.pop(sid, None)

    def join_workers(self, timeout: float = 60.0) -> None:
        """Wait for background indexing threads (at shutdown: torch must not be torn down mid-run)."""
        with self._lock:
            threads = [st.index_thread for st in self.sessions.values() if st.index_thread is not None]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def prune(self, alive: Callable[[LaunchState], bool]) -> int:
        """Drop sessions that are no longer alive (tokens expired or deleted); returns how many."""
        with self._lock:
            dead = [sid for sid, st in self.sessions.items() if not alive(st)]
            for sid in dead:
                self.sessions.pop(sid, None)
        return len(dead)
