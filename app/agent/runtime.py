"""Run one drafting task: tools over the permitted index, a backend, verified citations.

The agent reads only through ``ChartTools`` (the permitted index and minimal
chart facts). The backend proposes sentences with (chunk, quote) evidence;
``citations.verify`` decides what is supported. The model never writes: the
app writes after validation (``app.writeback``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from app.agent.backends import Backend, BackendResult
from app.agent.citations import Sentence, verify
from app.agent.guard import Limits, looks_injected
from app.agent.tasks import TaskSpec
from app.errors import AppError
from app.logging import event, opaque
from app.monitoring import tracing
from app.retrieval.chunking import Chunk
from app.retrieval.index import SearchResult
from app.retrieval.indexer import PatientChart
from app.retrieval.policy import decide

log = logging.getLogger(__name__)
AGENT_VERSION = "smart-draft-agent/0.2.0"
STATUSES = ("completed", "escalated", "failed", "loop_detected", "limit_exceeded")


class LimitExceeded(AppError):
    code = "limit_exceeded"


class ChartTools:
    """The only door from a backend to patient data; counts calls against the limits.

    Every call is charged: the wall-time deadline, the number of tool calls, and
    identical repeated calls (same tool, same arguments) beyond ``max_repeats``,
    which end the run as ``loop_detected``.
    """

    def __init__(self, chart: PatientChart, limits: Limits) -> None:
        self.chart = chart
        self.limits = limits
        self.calls = 0
        self._seen: dict[tuple[str, str], int] = {}
        self.loop_detected = False
        self.deadline = time.monotonic() + limits.max_wall_s

    def charge(self, tool: str, args: object = "") -> None:
        """Count one tool call; raise LimitExceeded when a limit is reached."""
        self.calls += 1
        key = (tool, repr(args))
        self._seen[key] = self._seen.get(key, 0) + 1
        if self._seen[key] > self.limits.max_repeats:
            self.loop_detected = True
            raise LimitExceeded("The agent repeated the same tool call.", code="loop_detected")
        if self.calls > self.limits.max_tool_calls:
            raise LimitExceeded("The agent used too many tool calls.")
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded("The run took longer than its wall-time limit.")

    @tracing.traced("tool.search", tool="search")
    def search(self, query: str, k: int = 6) -> list[SearchResult]:
        self.charge("search", (query, k))
        return self.chart.search(query, k=k)

    @tracing.traced("tool.read_notes", tool="read_notes")
    def read_notes(self) -> list[Chunk]:
        """Every permitted chunk of the chart, oldest note first (a screen reads them all).

        The policy decision is repeated here, as at search time (defence in depth).
        """
        self.charge("read_notes")
        self.chart.wait_indexed()  # a screen reads every note: wait for the oldest ones too
        allowed = {did for did, meta in self.chart.documents.items()
                   if decide(meta, self.chart.context, self.chart.policy).allowed}
        chunks = [c for c in self.chart.chunk_by_id().values() if c.document_id in allowed]
        return sorted(chunks, key=lambda c: ((self.document_date(c.document_id) or ""), c.document_id, c.start))

    def patient_resource(self) -> dict | None:
        """The Patient resource, for the app's pseudonymiser only (not a model tool)."""
        return self.chart.patient

    @tracing.traced("tool.demographics", tool="demographics")
    def demographics(self) -> dict[str, object]:
        """Minimum necessary: age in years and administrative gender; never name or identifiers."""
        self.charge("demographics")
        patient = self.chart.patient or {}
        age = None
        birth = patient.get("birthDate")
        if isinstance(birth, str) and len(birth) >= 4 and birth[:4].isdigit():
            today = date.today()
            age = today.year - int(birth[:4])
            if len(birth) >= 10 and (today.month, today.day) < (int(birth[5:7]), int(birth[8:10])):
                age -= 1
        gender = patient.get("gender") if isinstance(patient.get("gender"), str) else None
        return {"age_years": age, "gender": gender}

    @tracing.traced("tool.conditions", tool="conditions")
    def conditions(self) -> list[dict[str, str]]:
        self.charge("conditions")
        out = []
        for cond in self.chart.visible_conditions():  # the policy decision, repeated
            code = cond.get("code") or {}
            display = code.get("text") or next(
                (c.get("display") for c in code.get("coding") or [] if c.get("display")), None)
            status = next((c.get("code") for c in (cond.get("clinicalStatus") or {}).get("coding") or []),
                          "unknown")
            if display:
                out.append({"display": str(display), "status": str(status)})
        return out

    def document_date(self, document_id: str) -> str | None:
        meta = self.chart.documents.get(document_id)
        return meta.date if meta else None


@dataclass
class Draft:
    run_id: str
    task: str
    patient_id: str
    status: str
    sentences: list[Sentence]
    findings: dict | None
    injection_suspected: list[str]
    backend: str
    model: str
    turns: int
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_ms: int
    prompt_version: str
    notes: list[str] = field(default_factory=list)
    answer_found: bool = True

    @property
    def text(self) -> str:
        lines = [s.text for s in self.sentences] or list(self.notes)
        return "\n".join(lines)

    @property
    def unsupported(self) -> int:
        return sum(1 for s in self.sentences if not s.supported)

    def ledger_row(self) -> dict[str, object]:
        """The PHI-free ledger row of this run: ids, counts, cost and timing, never text or patient."""
        return {"run_id": self.run_id, "task": self.task, "backend": self.backend, "model": self.model,
                "turns": self.turns, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
                "cost_usd": round(self.cost_usd, 6), "latency_ms": self.latency_ms, "status": self.status}

    def cited_documents(self) -> list[tuple[str, str | None]]:
        seen: dict[str, str | None] = {}
        for s in self.sentences:
            for c in s.citations:
                seen.setdefault(c.document, c.version)
        return sorted(seen.items())

    def contract(self, written: dict | None) -> dict:
        """The JSON output contract of ``python -m app draft --json`` (docs/cli.md)."""
        findings = None
        if self.findings is not None:
            def cited(item: dict) -> list[dict[str, object]]:
                idx = [i for i in item.get("sentence_indexes", []) if 0 <= i < len(self.sentences)]
                return [c.public() for i in idx for c in self.sentences[i].citations]

            events = [{k: ev.get(k) for k in ("organ", "term", "ctcae_grade", "grade_basis", "grade_reason",
                                              "attribution", "onset", "status")}
                      | {"citations": cited(ev)} for ev in self.findings.get("events", [])]
            excluded = [{k: ex.get(k) for k in ("organ", "term", "reason")} | {"citations": cited(ex)}
                        for ex in self.findings.get("excluded", [])]
            findings = {"irae_detected": bool(self.findings.get("irae_detected")), "events": events,
                        "excluded": excluded}
        return {
            "task": self.task, "patient": self.patient_id, "status": self.status,
            "draft": {"text": self.text, "sentences": [s.public() for s in self.sentences],
                      "answer_found": self.answer_found},
            "findings": findings,
            "flags": {"injection_suspected": self.injection_suspected,
                      "unsupported_sentences": self.unsupported},
            "run": {"run_id": self.run_id, "backend": self.backend, "model": self.model,
                    "turns": self.turns, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
                    "cost_usd": self.cost_usd, "latency_ms": self.latency_ms},
            "written": written,
        }


@tracing.traced("agent.run", attrs=lambda chart, task, backend, **_: {"task": task.name,
                                                                       "backend": backend.name})
def run_task(chart: PatientChart, task: TaskSpec, backend: Backend, *, question: str | None = None,
             limits: Limits | None = None, ledger: Callable[[dict[str, object]], None] | None = None) -> Draft:
    """Run ``task`` for the chart with ``backend`` under ``limits``; never raises for a run that
    goes wrong after it started: the draft's status says what happened (completed, escalated,
    failed, loop_detected, limit_exceeded). ``ledger`` receives the PHI-free ledger row."""
    limits = limits or Limits()
    if task.name == "question" and not (question or "").strip():
        raise AppError("Type a question first.", code="question_missing", http_status=400)
    run_id = str(uuid.uuid4())
    tools = ChartTools(chart, limits)
    started = time.monotonic()
    try:
        with tracing.span("model.call", backend=backend.name):
            result = backend.run(task, tools, question=question, limits=limits)
    except LimitExceeded as exc:
        result = BackendResult(sentences=[], status=exc.code, notes=["The run was stopped: " + str(exc)])
    except AppError as exc:  # the model endpoint failed after its retries; the message is ours
        result = BackendResult(sentences=[], status="failed", notes=["The run failed: " + str(exc)])
        event(log, "agent.backend_failed", run_id=run_id, backend=backend.name, error_code=exc.code)
    latency = int((time.monotonic() - started) * 1000)
    status = result.status
    if status == "completed" and (latency > limits.max_wall_s * 1000
                                  or result.tokens_in + result.tokens_out > limits.max_tokens
                                  or result.turns > limits.max_turns):
        status = "limit_exceeded"
    if status != "completed" and status not in STATUSES:
        status = "failed"
    with tracing.span("citations.verify"):
        sentences = verify(result.sentences, chart.chunk_by_id())
    hidden = getattr(chart, "hidden_injection", frozenset())
    injected = sorted(d for d, text in chart.texts.items() if d in hidden or looks_injected(text))
    draft = Draft(
        run_id=run_id, task=task.name, patient_id=chart.patient_id, status=status,
        sentences=sentences, findings=result.findings if status == "completed" else None,
        injection_suspected=injected,
        backend=result.backend or backend.name, model=result.model or backend.model, turns=result.turns,
        tokens_in=result.tokens_in, tokens_out=result.tokens_out, cost_usd=result.cost_usd,
        latency_ms=latency, prompt_version=task.prompt_version, notes=result.notes,
        answer_found=result.answer_found,
    )
    row = draft.ledger_row()
    tracing.annotate(status=draft.status, model=draft.model, turns=draft.turns, tokens_in=draft.tokens_in,
                     tokens_out=draft.tokens_out, cost_usd=draft.cost_usd, count=len(sentences))
    event(log, "agent.run", **{k: v for k, v in row.items() if k != "latency_ms"},
          duration_ms=latency, patient=opaque(chart.patient_id), count=len(sentences))
    if ledger is not None:
        ledger(row)
    return draft
