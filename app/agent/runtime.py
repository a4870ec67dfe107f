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
from dataclasses import dataclass, field

from app.agent.backends import Backend, BackendResult
from app.agent.citations import Sentence, verify
from app.agent.guard import Limits, looks_injected
from app.agent.tasks import TaskSpec
from app.errors import AppError
from app.logging import event, opaque
from app.retrieval.index import SearchResult
from app.retrieval.indexer import PatientChart

log = logging.getLogger(__name__)
AGENT_VERSION = "smart-draft-agent/0.1.0"


class LimitExceeded(AppError):
    code = "limit_exceeded"


class ChartTools:
    """The only door from a backend to patient data; counts calls against the limits."""

    def __init__(self, chart: PatientChart, limits: Limits) -> None:
        self.chart = chart
        self.limits = limits
        self.calls = 0
        self._seen: dict[tuple[str, int], int] = {}
        self.loop_detected = False

    def search(self, query: str, k: int = 6) -> list[SearchResult]:
        self.calls += 1
        key = (query, k)
        self._seen[key] = self._seen.get(key, 0) + 1
        if self._seen[key] > self.limits.max_repeats:
            self.loop_detected = True
            raise LimitExceeded("The agent repeated the same search.", code="loop_detected")
        if self.calls > self.limits.max_tool_calls:
            raise LimitExceeded("The agent used too many tool calls.")
        return self.chart.search(query, k=k)

    def conditions(self) -> list[dict[str, str]]:
        out = []
        for cond in self.chart.conditions:
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
            events = []
            for ev in self.findings.get("events", []):
                idx = ev.get("sentence_indexes", [])
                cites = [c.public() for i in idx for c in self.sentences[i].citations]
                events.append({k: ev.get(k) for k in ("organ", "term", "ctcae_grade", "attribution",
                                                       "onset", "status")} | {"citations": cites})
            findings = {"irae_detected": bool(self.findings.get("irae_detected")), "events": events}
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


def run_task(chart: PatientChart, task: TaskSpec, backend: Backend, *, question: str | None = None,
             limits: Limits | None = None) -> Draft:
    limits = limits or Limits()
    if task.name == "question" and not (question or "").strip():
        raise AppError("Type a question first.", code="question_missing", http_status=400)
    run_id = str(uuid.uuid4())
    tools = ChartTools(chart, limits)
    started = time.monotonic()
    status = "completed"
    try:
        result = backend.run(task, tools, question=question, limits=limits)
        status = result.status
    except LimitExceeded as exc:
        status = exc.code
        result = BackendResult(sentences=[], status=status, notes=["The run was stopped: " + str(exc)])
    latency = int((time.monotonic() - started) * 1000)
    if latency > limits.max_wall_s * 1000 and status == "completed":
        status = "limit_exceeded"
    sentences = verify(result.sentences, chart.chunk_by_id())
    injected = sorted(d for d, text in chart.texts.items() if looks_injected(text))
    draft = Draft(
        run_id=run_id, task=task.name, patient_id=chart.patient_id, status=status,
        sentences=sentences, findings=result.findings, injection_suspected=injected,
        backend=backend.name, model=backend.model, turns=result.turns,
        tokens_in=result.tokens_in, tokens_out=result.tokens_out, cost_usd=result.cost_usd,
        latency_ms=latency, prompt_version=task.prompt_version, notes=result.notes,
        answer_found=result.answer_found,
    )
    event(log, "agent.run", run_id=run_id, task=task.name, backend=backend.name, model=backend.model,
          status=status, turns=result.turns, tokens_in=result.tokens_in, tokens_out=result.tokens_out,
          duration_ms=latency, patient=opaque(chart.patient_id), count=len(sentences))
    return draft
