"""State of launched sessions, kept in the database so that any worker serves any request.

What a request needs lives in the database (``app.store.records``): the launch
context (sealed), pending launches, drafts (sealed), write results and review
history (sealed), jobs. This process keeps only caches it can rebuild: the
opened chart and its index (rebuilt from the FHIR server and the encrypted
embedding cache by ``web.context.ensure_chart`` on a worker that lacks it), the
EHR's stylesheet, and the threads it runs. A restart or another worker loses
nothing; docs/operations.md describes the multi-worker setup.

``LaunchState.drafts``, ``.results``, ``.reviews`` and ``.jobs`` are views of
the database scoped to the session: a draft of another session is not found.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.agent.runtime import Draft
from app.retrieval.indexer import PatientChart
from app.smart.discovery import SmartConfiguration
from app.smart.launch import PendingLaunch

if TYPE_CHECKING:
    from app.services import Services

_CONTEXT_FIELDS = ("sid", "fhir_base", "patient_id", "user_reference", "role", "encounter_id",
                   "need_patient_banner", "smart_style_url", "unauthenticated", "created")


class _CancelFlag:
    """``job.cancel.is_set()``: whether a cancel was recorded for the job (in the database)."""

    def __init__(self, job: RunJob) -> None:
        self._job = job

    def is_set(self) -> bool:
        row = self._job._row()
        return bool(row and row["cancel_requested"])


class RunJob:
    """A drafting run started from the page: a live handle on its row of ``jobs``.

    Any worker polls it (``state``, ``run_id``, ``error_code`` are read from the
    database). Cancelling and starting the write are decided by one conditional
    UPDATE each, so a cancel on one worker and the write on another cannot both
    win. A job whose worker was killed ends ``failed`` (``worker_lost``) when
    next looked at (``JobStore.reap``).
    """

    def __init__(self, key: str | None = None, task: str = "", *, store: Any = None) -> None:
        self.key = key or secrets.token_urlsafe(12)
        self.task = task
        self._store = store
        self.cancel = _CancelFlag(self)

    def _row(self) -> dict | None:
        return self._store.get(self.key) if self._store is not None else None

    @property
    def state(self) -> str:
        row = self._row()
        return str(row["state"]) if row else "running"

    @property
    def run_id(self) -> str | None:
        row = self._row()
        return row["run_id"] if row else None

    @property
    def error_code(self) -> str | None:
        row = self._row()
        return row["error_code"] if row else None

    def start_writing(self) -> bool:
        return bool(self._store.start_writing(self.key))

    def finish(self, state: str, *, run_id: str | None = None, error_code: str | None = None) -> None:
        self._store.finish(self.key, state, run_id=run_id, error_code=error_code)

    def request_cancel(self) -> bool:
        """True when the run was cancelled; False once the write started (or the run ended)."""
        return bool(self._store.cancel(self.key))


class _Drafts(Mapping):
    def __init__(self, store: Any, sid: str) -> None:
        self._store, self._sid = store, sid

    def __getitem__(self, run_id: str) -> Draft:
        draft = self._store.get(run_id, self._sid)
        if draft is None:
            raise KeyError(run_id)
        return draft

    def get(self, run_id: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._store.get(run_id, self._sid) or default

    def __setitem__(self, run_id: str, draft: Draft) -> None:
        self._store.save(self._sid, draft)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.run_ids(self._sid))

    def __len__(self) -> int:
        return len(self._store.run_ids(self._sid))

    def values(self) -> list[Draft]:  # type: ignore[override]
        return self._store.for_session(self._sid)


class _Result(dict):
    """A write result that is saved again when a key of it is set."""

    def __init__(self, data: dict, save: Callable[[dict], None]) -> None:
        super().__init__(data)
        self._save = save

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._save(dict(self))


class _Results:
    def __init__(self, store: Any, sid: str) -> None:
        self._store, self._sid = store, sid

    def get(self, run_id: str, default: Any = None) -> Any:
        data = self._store.result(run_id, self._sid)
        if data is None:
            return default
        return _Result(data, lambda d: self._store.set_result(run_id, d, self._sid))

    def __getitem__(self, run_id: str) -> dict:
        out = self.get(run_id)
        if out is None:
            raise KeyError(run_id)
        return out  # type: ignore[no-any-return]

    def __setitem__(self, run_id: str, result: dict) -> None:
        self._store.set_result(run_id, dict(result), self._sid)

    def __contains__(self, run_id: object) -> bool:
        return isinstance(run_id, str) and self._store.result(run_id, self._sid) is not None


class _Appender(list):
    def __init__(self, items: list, append: Callable[[dict], None]) -> None:
        super().__init__(items)
        self._append = append

    def append(self, item: Any) -> None:
        self._append(item)
        super().append(item)


class _Reviews:
    def __init__(self, store: Any, sid: str) -> None:
        self._store, self._sid = store, sid

    def get(self, run_id: str, default: Any = None) -> Any:
        items = self._store.reviews(run_id, self._sid)
        return items if items else default

    def setdefault(self, run_id: str, default: Any = None) -> list:
        items = self._store.reviews(run_id, self._sid) or []
        return _Appender(items, lambda rec: self._store.add_review(run_id, rec, self._sid))


class _Jobs(Mapping):
    def __init__(self, store: Any, sid: str) -> None:
        self._store, self._sid = store, sid

    def __setitem__(self, key: str, job: RunJob) -> None:
        self._store.create(key, self._sid, kind="draft", task=job.task)
        job._store = self._store

    def __getitem__(self, key: str) -> RunJob:
        row = self._store.get(key, self._sid)
        if row is None:
            raise KeyError(key)
        return RunJob(row["key"], row["task"] or "", store=self._store)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[key]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.keys(self._sid))

    def __len__(self) -> int:
        return len(self._store.keys(self._sid))


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
    chart: PatientChart | None = None  # this process's cache; rebuilt where missing
    index_thread: threading.Thread | None = None
    unauthenticated: bool = False
    style_css: str | None = None  # the EHR's smart_style_url as CSS, fetched once per process
    created: float = field(default_factory=time.time)
    drafts: Any = None  # bound by WebState: views of the database scoped to this session
    results: Any = None
    reviews: Any = None
    jobs: Any = None

    def context(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in _CONTEXT_FIELDS}
        out["config"] = self.config.to_json() if self.config is not None else None
        return out

    def bind(self, services: Services) -> LaunchState:
        self.drafts = _Drafts(services.drafts, self.sid)
        self.results = _Results(services.drafts, self.sid)
        self.reviews = _Reviews(services.drafts, self.sid)
        self.jobs = _Jobs(services.jobs, self.sid)
        return self


class WebState:
    def __init__(self, services: Services) -> None:
        self._s = services
        self._lock = threading.Lock()
        self.sessions: dict[str, LaunchState] = {}  # this process's cache (charts, threads)

    # -- pending launches: in the database, single use ------------------------------------------
    def put_pending(self, key: str, pending: PendingLaunch) -> None:
        self._s.pending.put(key, pending)

    def take_pending(self, key: str | None) -> PendingLaunch | None:
        return self._s.pending.take(key)

    # -- sessions --------------------------------------------------------------------------------
    def get(self, sid: str | None) -> LaunchState | None:
        if not sid:
            return None
        loaded = self._s.web_sessions.load(sid)
        with self._lock:
            if loaded is None:
                self.sessions.pop(sid, None)  # logged out or expired (maybe on another worker)
                return None
            state = self.sessions.get(sid)
            if state is None:
                context, created = loaded
                config = context.pop("config", None)
                context["created"] = created
                state = LaunchState(config=SmartConfiguration.from_stored(config) if config else None,
                                    **{k: context.get(k) for k in _CONTEXT_FIELDS if k in context})
                state.bind(self._s)
                self.sessions[sid] = state
            return state

    def put(self, state: LaunchState) -> None:
        state.bind(self._s)
        self._s.web_sessions.save(state.sid, state.context())
        with self._lock:
            self.sessions[state.sid] = state

    def drop(self, sid: str) -> None:
        self._s.web_sessions.delete(sid)
        with self._lock:
            self.sessions.pop(sid, None)

    def active_count(self) -> int:
        return int(self._s.web_sessions.count())

    def join_workers(self, timeout: float = 60.0) -> None:
        """Wait for background indexing threads (at shutdown: torch must not be torn down mid-run)."""
        with self._lock:
            threads = [st.index_thread for st in self.sessions.values() if st.index_thread is not None]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def prune(self, alive: Callable[[LaunchState], bool]) -> int:
        """Drop cached sessions that are no longer alive and expired rows; returns how many cached."""
        self._s.web_sessions.purge_expired()
        with self._lock:
            dead = [sid for sid, st in self.sessions.items() if not alive(st)]
            for sid in dead:
                self.sessions.pop(sid, None)
        for sid in dead:
            self._s.web_sessions.delete(sid)
        return len(dead)
