"""``python -m app batch``: a cohort through fetch → policy → screen → outbox → report.

1. **Fetch** (this process, I/O): Bulk Data ``$export`` for a ``Group/<id>`` cohort when the
   server offers it (``app.batch.bulk``; resources spooled to disk, encrypted, one patient at a
   time out), else paged search per patient with ``fetch_concurrency`` threads. Every resource
   passes the role policy exactly as a launch does (``open_chart``: ``decide`` /
   ``decide_resource``, labels fail closed); attachments are fetched with the token under the
   byte cap (``extract_text``). Each patient becomes one sealed line of a work file.
2. **Screen** (an engine: worker processes or Ray): ``app.batch.screen.Screener``.
3. **Write** (this process): a patient with findings gets one draft through the outbox
   (``DraftingService.write``); its run id is an HMAC of batch id and patient, so a re-run, a
   retried write or a second engine run cannot write it twice (the outbox keeps one item per run
   id; the submitter finds a draft already on the server by that identifier).
4. **Checkpoint** per patient (``app.batch.store.Checkpoints``): a re-run of the same batch skips
   every patient already screened and writes what was screened but not yet written.
5. **Report** (``app.batch.report``): CSV, JSON, HTML; opaque patient keys only.

The batch id defaults to an HMAC of the FHIR base, cohort, task, backend, role and filters: the
same command resumes. Nothing here logs a patient id, a name or note text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.batch.bulk import BulkClient, BulkNotSupported, ExportSpec, LocalFilter, export_resources
from app.batch.cohort import Cohort, parse_cohort, patient_ids
from app.batch.screen import meta_to_json, open_result
from app.batch.store import Checkpoints, Spool, private_dir
from app.config import Settings
from app.errors import AppError, ConfigError
from app.fhir.attachments import extract_text
from app.fhir.client import FhirClient
from app.fhir.validation import is_valid
from app.logging import event
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.indexer import open_chart
from app.services import Actor, Services
from app.smart.scopes import Grants

log = logging.getLogger(__name__)
TYPES = ("Patient", "Condition", "DocumentReference")
TASKS = ("irae",)
SOURCES = ("auto", "bulk", "search")
PROBLEMS = ("fetch_failed", "write_failed", "model_failed")


@dataclass
class BatchOptions:
    fhir_base: str
    cohort: str
    task: str = "irae"
    engine: str = "local"
    backend: str = "offline"
    since: str | None = None
    type_filters: tuple[str, ...] = ()
    out: Path | None = None
    write: bool = True
    auth: str = "auto"
    role: str = "clinician"
    source: str = "auto"
    workers: int | None = None
    fetch_concurrency: int = 4
    batch_id: str | None = None
    progress: bool = True
    poll_cap_s: float = 300.0


@dataclass
class Connection:
    client: FhirClient
    grants: Grants
    mode: str
    jti: str | None


@dataclass
class RunStats:
    counts: Counter[str] = field(default_factory=Counter)
    skipped_resume: int = 0
    screened: int = 0
    written: int = 0
    notes: int = 0
    progress_messages: list[str] = field(default_factory=list)
    source: str = ""
    fetch_s: float = 0.0
    screen_s: float = 0.0


# ---- readers over exported resources or the server -------------------------------------------

class SpoolClient:
    """One patient's spooled resources behind the two calls ``open_chart`` makes (read, search)."""

    def __init__(self, patient_id: str, resources: list[dict]) -> None:
        self.patient_id = patient_id
        self.by_type: dict[str, list[dict]] = {}
        for res in resources:
            self.by_type.setdefault(str(res.get("resourceType")), []).append(res)
        self.skipped: Counter[str] = Counter()

    def read(self, resource_type: str, rid: str, **_kw: Any) -> dict:
        for res in self.by_type.get(resource_type, []):
            if res.get("id") == rid:
                return res
        # not in the export (e.g. unchanged since --since): only the id is known, no demographics
        return {"resourceType": resource_type, "id": rid}

    def search(self, resource_type: str, params: dict | None = None, *, validate: bool = False,
               **_kw: Any) -> Iterator[dict]:
        for res in self.by_type.get(resource_type, []):
            if validate and not is_valid(res):
                self.skipped[f"invalid_{resource_type}"] += 1
                continue
            yield res


class FilteredClient:
    """The server's client, with ``--since`` / ``--type-filter`` sent and checked again locally."""

    def __init__(self, client: FhirClient, local: LocalFilter, spec: ExportSpec) -> None:
        self.client = client
        self.local = local
        self.extra: dict[str, dict[str, str]] = {}
        for tf in spec.type_filters:
            rtype, _, query = tf.partition("?")
            self.extra.setdefault(rtype, {}).update(dict(p.split("=", 1) for p in query.split("&") if "=" in p))
        self.since = spec.since
        self.skipped: Counter[str] = Counter()

    def read(self, resource_type: str, rid: str, **kw: Any) -> dict:
        return self.client.read(resource_type, rid, **kw)

    def search(self, resource_type: str, params: dict | None = None, **kw: Any) -> Iterator[dict]:
        params = dict(params or {}) | self.extra.get(resource_type, {})
        if self.since and resource_type != "Patient":
            params["_lastUpdated"] = f"ge{self.since}"
        before = Counter(self.client.skipped)
        for res in self.client.search(resource_type, params, **kw):
            if self.local.keep(res):
                yield res
        self.skipped.update(Counter(self.client.skipped) - before)


def build_item(reader: Any, attachments: Any, patient_id: str, key: str, *, grants: Grants, role: str,
               policy: Any, max_attachment_bytes: int = 2_000_000, max_documents: int = 2000) -> dict:
    """One patient's work item: what the policy allows (``open_chart`` over ``reader``), with the
    permitted notes' text (attachments fetched through ``attachments``, with the token, under the cap)."""
    chart = open_chart(reader, patient_id, grants=grants, role=role, policy=policy, embedder=_NOEMBED,
                       max_attachment_bytes=max_attachment_bytes, max_documents=max_documents)
    counts: Counter[str] = Counter(chart.counts)
    docs = []
    for meta, res in chart.pending.values():
        extracted = extract_text(attachments, res, max_bytes=max_attachment_bytes)
        if extracted.text is None:
            counts[f"skipped:{extracted.skipped}"] += 1
            continue
        docs.append({"meta": meta_to_json(meta), "text": extracted.text})
        counts["allowed"] += 1
    return {"key": key, "patient_id": patient_id, "role": role, "patient": chart.patient,
            "conditions": chart.conditions, "documents": docs, "counts": dict(counts)}


_NOEMBED = HashingEmbedder(8, model_id="batch-no-embedding")


# ---- the pipeline ---------------------------------------------------------------------------------

class BatchRun:
    def __init__(self, opts: BatchOptions, services: Services, conn: Connection, *,
                 sleep: Callable[[float], None] = time.sleep, echo: Callable[[str], None] | None = None) -> None:
        if opts.task not in TASKS:
            raise ConfigError(f"batch runs the screen tasks only: {', '.join(TASKS)}.")
        if opts.source not in SOURCES:
            raise ConfigError(f"--source must be one of {', '.join(SOURCES)}.")
        self.opts, self.services, self.conn = opts, services, conn
        self.settings: Settings = services.settings
        self.secret = self.settings.secret()
        self.sleep = sleep
        self.echo = echo or (lambda _msg: None)
        self.cohort: Cohort = parse_cohort(opts.cohort)
        self.spec = ExportSpec(group_id=self.cohort.group_id, types=TYPES, since=opts.since,
                               type_filters=tuple(opts.type_filters))
        self.local = LocalFilter.from_spec(self.spec)  # refuses filters we cannot check again
        self.batch_id = opts.batch_id or self._derive_batch_id()
        self.root = private_dir(self.settings.data_dir / "batch")
        self.work_dir = private_dir(self.root / self.batch_id)
        self.checkpoints = Checkpoints(self.root / "checkpoints.sqlite", services.vault)
        self.stats = RunStats()

    # ids -----------------------------------------------------------------------------------
    def _mac(self, label: str, value: str) -> str:
        return hmac.new(self.secret, f"{label}:{value}".encode(), hashlib.sha256).hexdigest()

    def _derive_batch_id(self) -> str:
        o = self.opts
        parts = [o.fhir_base.rstrip("/"), o.cohort, o.task, o.backend, o.role, o.since or "", *o.type_filters]
        return "b" + self._mac("batch-id", "\x1f".join(parts))[:15]

    def patient_key(self, patient_id: str) -> str:
        return self._mac(f"batch-patient:{self.batch_id}", patient_id)[:24]

    def run_id(self, key: str) -> str:
        return str(uuid.UUID(bytes=bytes.fromhex(self._mac(f"batch-run:{self.batch_id}", key)[:32]), version=4))

    # fetch ---------------------------------------------------------------------------------
    def _item(self, reader: Any, patient_id: str, key: str) -> dict:
        s = self.settings
        return build_item(reader, self.conn.client, patient_id, key, grants=self.conn.grants, role=self.opts.role,
                          policy=self.services.policy, max_attachment_bytes=s.max_attachment_bytes,
                          max_documents=s.max_documents)

    def _bulk_items(self, finished: set[str]) -> Iterator[dict]:
        state = self.checkpoints.batch(self.batch_id)
        spool = Spool(self.work_dir / "spool.sqlite", self.services.vault)
        try:
            if state["phase"] != "spooled":
                bulk = BulkClient(self.conn.client, sleep=self.sleep, max_retry_after_s=self.opts.poll_cap_s,
                                  on_progress=self._progress_message)
                for res in export_resources(bulk, self.spec, status_url=state["status_url"],
                                            on_status_url=lambda url: self.checkpoints.set_batch(
                                                self.batch_id, status_url=url)):
                    spool.add(res)
                spool.commit()
                self.checkpoints.set_batch(self.batch_id, phase="spooled", status_url=None)
                self.stats.counts["bulk_polls"] += bulk.polls
            for pid in spool.patients():
                key = self.patient_key(pid)
                if key in finished:
                    self.stats.skipped_resume += 1
                    continue
                yield self._item(SpoolClient(pid, spool.resources(pid)), pid, key)
        finally:
            spool.close()

    def _paged_items(self, finished: set[str]) -> Iterator[dict]:
        reader = FilteredClient(self.conn.client, self.local, self.spec)
        ids = patient_ids(self.conn.client, self.cohort)
        window = max(1, self.opts.fetch_concurrency) * 2
        with ThreadPoolExecutor(max_workers=max(1, self.opts.fetch_concurrency),
                                thread_name_prefix="batch-fetch") as pool:
            pending: set[Future[dict]] = set()

            def drain(block_until: int) -> Iterator[dict]:
                nonlocal pending
                while len(pending) > block_until:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        try:
                            yield fut.result()
                        except AppError as exc:  # one patient failed: counted, retried by a re-run
                            self.stats.counts[f"fetch_failed:{exc.code}"] += 1
                            event(log, "batch.fetch_failed", error_code=exc.code)

            for pid in ids:
                key = self.patient_key(pid)
                if key in finished:
                    self.stats.skipped_resume += 1
                    continue
                pending.add(pool.submit(self._item, reader, pid, key))
                yield from drain(window)
            yield from drain(0)

    def items(self, finished: set[str]) -> Iterator[dict]:
        use_bulk = self.opts.source == "bulk" or (self.opts.source == "auto" and self.cohort.kind == "group")
        if use_bulk and self.cohort.kind != "group":
            raise ConfigError("--source bulk needs a Group/<id> cohort (Group-level $export).")
        if use_bulk:
            try:
                self.stats.source = "bulk"
                yield from self._bulk_items(finished)
                return
            except BulkNotSupported:
                if self.opts.source == "bulk":
                    raise
                self.echo("The server offers no $export for this Group: paged search per patient.")
        self.stats.source = "search"
        yield from self._paged_items(finished)

    def _progress_message(self, text: str) -> None:
        self.stats.progress_messages.append(text)
        self.echo(f"export: {text}")

    # write ---------------------------------------------------------------------------------
    def handle(self, key: str, summary: dict, draft: Any, write_chart: Any) -> str:
        """Write (or not) one screened patient; returns the draft state for the report."""
        if not summary.get("irae_detected") or summary.get("status") != "completed":
            return "no_findings" if summary.get("status") == "completed" else f"not_written:{summary.get('status')}"
        if not self.opts.write:
            return "not_written:no_write"
        draft.run_id = self.run_id(key)
        settings = self.settings
        actor = Actor(user_reference=None, client_id=settings.backend_client_id or settings.client_id,
                      token_jti=self.conn.jti, grants=self.conn.grants)
        result = self.services.drafting().write(self.conn.client, write_chart, draft, actor)
        return str(result["state"])

    def _record_model_call(self, draft: Any, patient_id: str) -> None:
        now = datetime.now(UTC)
        self.services.audit.record_model_call(
            started=now, ended=now, outcome="0" if draft.status == "completed" else "4", user_reference=None,
            client_id=self.settings.backend_client_id or self.settings.client_id, token_jti=self.conn.jti,
            backend=draft.backend, model_id=draft.model, run_id=self.run_id(self.patient_key(patient_id)),
            patient_id=patient_id)

    def finish_one(self, sealed: str) -> None:
        key, summary, draft, write_chart = open_result(self.services.vault, sealed)
        run_id = self.run_id(key)
        wants_write = self.opts.write and summary.get("irae_detected") and summary.get("status") == "completed"
        self.checkpoints.screened(self.batch_id, key, run_id, summary, sealed if wants_write else None)
        self.stats.screened += 1
        self.stats.notes += int(summary.get("notes", 0))
        self._record_model_call(draft, write_chart.patient_id)
        self._write(key, summary, draft, write_chart)

    def _write(self, key: str, summary: dict, draft: Any, write_chart: Any) -> None:
        try:
            state = self.handle(key, summary, draft, write_chart)
        except AppError as exc:  # stays 'screened': the next run writes it without screening again
            self.stats.counts[f"write_failed:{exc.code}"] += 1
            event(log, "batch.write_failed", error_code=exc.code)
            return
        if state in ("written", "queued", "held_until_approval"):
            self.stats.written += 1 if state == "written" else 0
        self.checkpoints.done(self.batch_id, key, state, wrote=state == "written")

    def resume_writes(self) -> None:
        for key, _run_id, sealed in list(self.checkpoints.pending_writes(self.batch_id)):
            if not sealed:
                self.checkpoints.done(self.batch_id, key, "no_findings", wrote=False)
                continue
            k, summary, draft, write_chart = open_result(self.services.vault, sealed)
            self._write(k, summary, draft, write_chart)
            self.stats.counts["resumed_writes"] += 1

    # the whole run -----------------------------------------------------------------------------
    def run(self) -> dict:
        from app.batch.engines import get_engine
        from app.batch.report import write_reports

        started = time.monotonic()
        event(log, "batch.start", count=0)
        self.resume_writes()
        finished = self.checkpoints.finished(self.batch_id)
        if self.checkpoints.batch(self.batch_id)["phase"] == "complete":
            self.echo("This batch is complete: nothing fetched or screened again (a new --since or --batch-id "
                      "starts another).")
            self.stats.counts["already_complete"] += 1
            out_dir = self.opts.out or (self.work_dir / "report")
            return write_reports(out_dir, self.batch_id, self.checkpoints.rows(self.batch_id), self.run_info(started))
        work_file = self.work_dir / "work.ndjson"
        total = 0
        with _Progress(self.opts.progress) as bar:
            fetch_task = bar.add("fetch (policy, attachments)")
            with work_file.open("w", encoding="ascii") as fh:
                for item in self.items(finished):
                    fh.write(self.services.vault.seal(json.dumps(item, separators=(",", ":"))) + "\n")
                    total += 1
                    bar.advance(fetch_task)
            self.stats.fetch_s = time.monotonic() - started
            screen_task = bar.add("screen", total=total)
            if self.opts.backend == "anthropic":
                t1 = time.monotonic()
                self._message_batches(work_file, lambda: bar.advance(screen_task))
                self.stats.screen_s = time.monotonic() - t1
                engine = None
            else:
                engine = get_engine(self.opts.engine, secret=self.secret, task=self.opts.task,
                                    backend=self.opts.backend,
                                    role_policy=str(self.settings.role_policy) if self.settings.role_policy else None,
                                    workers=self.opts.workers)
            t1 = time.monotonic()
            for sealed in engine.run(work_file, total=total) if engine is not None else ():
                self.finish_one(sealed)
                bar.advance(screen_task)
            if engine is not None:
                self.stats.screen_s = time.monotonic() - t1
        work_file.unlink(missing_ok=True)
        failed = {k: v for k, v in self.stats.counts.items() if k.startswith(PROBLEMS)}
        if not failed:
            (self.work_dir / "spool.sqlite").unlink(missing_ok=True)
            self.checkpoints.set_batch(self.batch_id, phase="complete")
        out_dir = self.opts.out or (self.work_dir / "report")
        summary = write_reports(out_dir, self.batch_id, self.checkpoints.rows(self.batch_id), self.run_info(started))
        event(log, "batch.done", count=self.stats.screened, duration_ms=round((time.monotonic() - started) * 1000))
        return summary

    def _message_batches(self, work_file: Path, advance: Callable[[], None], *, client: Any = None) -> None:
        """--backend anthropic: every patient's hybrid request through Message Batches (half price),
        then each answer verified against that patient's chart like any draft (docs/batch.md)."""
        from app.agent.backends.anthropic_batch import (
            MessageBatches,
            batch_request,
            custom_id_for,
            pseudonymiser_for,
            to_backend_result,
        )
        from app.agent.backends.llm import prices_for
        from app.batch.engines.local import work_lines
        from app.batch.screen import Replay, Screener, build_chart

        s = self.settings
        model = s.anthropic_model
        price = prices_for(s, model)
        if client is None:
            import anthropic

            key = s.anthropic_api_key.get_secret_value() if s.anthropic_api_key else None
            client = anthropic.Anthropic(api_key=key, timeout=s.llm_timeout_s, max_retries=s.llm_max_retries)
        screener = Screener(self.secret, self.opts.task, None,
                            str(s.role_policy) if s.role_policy else None)
        vault = self.services.vault

        def items() -> Iterator[dict]:
            for line in work_lines(work_file):
                yield json.loads(vault.open(line))

        def cid(item: dict) -> str:
            return custom_id_for(self.secret, self.batch_id, item["key"])

        requests = (batch_request(build_chart(i, screener.policy), custom_id=cid(i), model=model, secret=self.secret,
                                  task=self.opts.task) for i in items())
        outcome = MessageBatches(client, sleep=self.sleep).run(requests)
        self.stats.counts["message_batches"] += len(outcome.batches)
        for item in items():
            c = cid(item)
            if c not in outcome.messages:  # not checkpointed: the next run asks again
                self.stats.counts[f"model_failed:{outcome.failed.get(c, 'missing')}"] += 1
                continue
            result = to_backend_result(outcome.messages[c], task=screener.task, price=price, model=model,
                                       pseudo=pseudonymiser_for(self.secret, c, item.get("patient")))
            out = screener.screen_item(item, Replay(result, "anthropic-batch", model))
            self.finish_one(vault.seal(json.dumps(out)))
            advance()

    def run_info(self, started: float) -> dict:
        s = self.stats
        elapsed = time.monotonic() - started
        return {"batch_id": self.batch_id, "cohort": self.cohort.label, "task": self.opts.task,
                "engine": self.opts.engine, "backend": self.opts.backend, "source": s.source,
                "mode": self.conn.mode, "write": self.opts.write, "since": self.opts.since,
                "screened_this_run": s.screened, "skipped_already_screened": s.skipped_resume,
                "drafts_written_this_run": s.written, "notes_this_run": s.notes,
                "elapsed_s": round(elapsed, 2), "fetch_s": round(s.fetch_s, 2), "screen_s": round(s.screen_s, 2),
                "notes_per_hour": round(s.notes / s.screen_s * 3600) if s.screen_s > 0 else None,
                "export_progress_seen": len(s.progress_messages),
                "problems": {k: v for k, v in sorted(s.counts.items()) if k.startswith(PROBLEMS)},
                "counters": {k: v for k, v in sorted(s.counts.items()) if not k.startswith(PROBLEMS)}}


class _Progress:
    """rich progress bars (with ETA) on stderr; nothing when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=False)
            self.bar.__enter__()
        return self

    def add(self, name: str, total: int | None = None) -> Any:
        return self.bar.add_task(name, total=total) if self.bar else None

    def advance(self, task: Any) -> None:
        if self.bar is not None:
            self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def run_batch(opts: BatchOptions, *, services: Services | None = None, connection: Connection | None = None,
              sleep: Callable[[float], None] = time.sleep, echo: Callable[[str], None] | None = None) -> dict:
    from app.config import load_settings

    if opts.backend not in ("offline", "anthropic", "openai"):
        raise ConfigError("--backend must be offline, anthropic or openai.")
    services = services or Services(load_settings())
    if opts.backend == "anthropic":
        from app.batch.anthropic import check_allowed

        check_allowed(services.settings)
    if connection is None:
        from app.draft_cli import connect

        client, grants, mode, jti = connect(services, opts.fhir_base, opts.auth)
        connection = Connection(client, grants, mode, jti)
    return BatchRun(opts, services, connection, sleep=sleep, echo=echo).run()
