"""Anthropic Message Batches for population screening (``batch --backend anthropic``).

https://docs.anthropic.com/en/docs/build-with-claude/batch-processing

- **Half price**: batch requests are billed at 50 % of the list price (``BATCH_DISCOUNT``), cache
  reads and writes included; at most 100,000 requests or 256 MB per batch (``split``).
- **One request per patient, one turn**: hybrid mode is built in. The offline engine reads the
  chart first and only its candidate passages (``hybrid.candidate_ids``) go to the model, as
  ``<note_data>`` with injected instructions removed, names/identifiers pseudonymised and dates
  shifted; ``tool_choice`` forces the one ``submit_draft`` call, so no tool round trips are needed.
- **Shared cached prefix**: the tool definition and the system instructions are identical in
  every request of a batch and end with ``cache_control``, so the vendor can serve them from the
  prompt cache.
- **custom_id is opaque**: an HMAC of batch id and patient key (never a patient id or MRN; the
  vendor sees it). The date shift of the pseudonymiser is derived from it too, so results can be
  restored in any order, in another process, after a restart.
- Results arrive in any order and are matched by ``custom_id``. ``errored`` and ``expired``
  requests are sent again once in a new batch, then listed as failed.
- Not eligible for zero data retention: requests and results stay with the vendor until the
  batch is deleted (``delete`` after the results are read); the batch CLI refuses this backend
  unless ``APP_ANTHROPIC_BATCH_ALLOWED=true``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from app.agent.backends import BackendResult, get_backend
from app.agent.backends.hybrid import candidate_ids
from app.agent.backends.llm import (
    SYSTEM_INSTRUCTIONS,
    TOOL_SPECS,
    OutputInvalid,
    Price,
    Pseudonymiser,
    _note_data,
    cost_usd,
    first_message,
    parse_output,
    to_result,
)
from app.agent.guard import Limits
from app.agent.runtime import ChartTools
from app.agent.tasks import TaskSpec, get_task
from app.errors import TemporaryUpstreamError
from app.logging import event
from app.retrieval.indexer import PatientChart

log = logging.getLogger(__name__)
BATCH_DISCOUNT = 0.5
MAX_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024
SUBMIT_TOOL = next(t for t in TOOL_SPECS if t["name"] == "submit_draft")
BATCH_NOTE = ("In this request the app has already read the chart for you: the <note_data> passages in the "
              "user message are the tool results (the passages an offline screen selected). There are no other "
              "tools. Cite chunk ids and verbatim quotes from these passages only, and call submit_draft once.")
RETRY_TYPES = ("errored", "expired")


def _mac(secret: bytes, label: str, value: str) -> str:
    return hmac.new(secret, f"{label}:{value}".encode(), hashlib.sha256).hexdigest()


def custom_id_for(secret: bytes, batch_id: str, patient_key: str) -> str:
    """Opaque request id (``^[A-Za-z0-9_-]{1,64}$``): reveals neither the patient nor the batch."""
    return "r" + _mac(secret, f"msg-batch:{batch_id}", patient_key)[:40]


def pseudonymiser_for(secret: bytes, custom_id: str, patient: dict | None) -> Pseudonymiser:
    shift = 30 + int(_mac(secret, "date-shift", custom_id)[:8], 16) % 300
    return Pseudonymiser.for_patient(patient, shift_days=shift)


def candidates(chart: PatientChart, task: TaskSpec) -> tuple[ChartTools, list]:
    """The offline pass and the chunks it chose (hybrid mode), in reading order."""
    first = get_backend("offline").run(task, ChartTools(chart, Limits()), question=None, limits=Limits())
    tools = ChartTools(chart, Limits())
    chunks = tools.read_notes()
    ids = set(candidate_ids(task, first, chunks, []))
    return tools, [c for c in chunks if c.id in ids]


def batch_request(chart: PatientChart, *, custom_id: str, model: str, secret: bytes = b"",
                  task: str = "irae", max_tokens: int = 2048) -> dict:
    """One Message Batches request for one patient (``{"custom_id", "params"}``)."""
    spec = get_task(task)
    pseudo = pseudonymiser_for(secret, custom_id, chart.patient)
    tools, chosen = candidates(chart, spec)
    passages = "\n".join(_note_data(c, tools, pseudo) for c in chosen) or "No permitted note was selected."
    conditions = pseudo.apply(json.dumps(tools.conditions()))
    user = (f"{first_message(spec, None, pseudo)}\n\nPassages selected from the permitted notes:\n{passages}\n\n"
            f"Coded conditions (JSON): {conditions}")
    params = {"model": model, "max_tokens": max_tokens,
              "system": [{"type": "text", "text": SYSTEM_INSTRUCTIONS + "\n" + BATCH_NOTE,
                          "cache_control": {"type": "ephemeral"}}],
              "tools": [SUBMIT_TOOL], "tool_choice": {"type": "tool", "name": "submit_draft"},
              "messages": [{"role": "user", "content": user}]}
    return {"custom_id": custom_id, "params": params}


def split(requests: Iterable[dict], *, max_requests: int = MAX_REQUESTS,
          max_bytes: int = MAX_BATCH_BYTES) -> Iterator[list[dict]]:
    """Batches within the API's limits (count and serialized size)."""
    group: list[dict] = []
    size = 0
    for req in requests:
        n = len(json.dumps(req).encode())
        if group and (len(group) >= max_requests or size + n > max_bytes):
            yield group
            group, size = [], 0
        group.append(req)
        size += n
    if group:
        yield group


def _usage(message: Any) -> tuple[int, int, int, int]:
    u = message.get("usage") or {}
    return (int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0),
            int(u.get("cache_creation_input_tokens") or 0), int(u.get("cache_read_input_tokens") or 0))


def to_backend_result(message: dict, *, task: TaskSpec, pseudo: Pseudonymiser, price: Price,
                      model: str) -> BackendResult:
    """A succeeded batch message → ``BackendResult`` (citations are verified later by the runtime)."""
    tokens_in, tokens_out, cache_write, cache_read = _usage(message)
    cost = cost_usd(price, tokens_in, tokens_out, cache_write, cache_read) * BATCH_DISCOUNT
    use = next((b for b in message.get("content") or [] if b.get("type") == "tool_use"
                and b.get("name") == "submit_draft"), None)
    base = BackendResult(sentences=[], status="escalated", backend="anthropic-batch", model=model,
                         notes=["The model did not submit a draft in the batch; a clinician must draft this."])
    if use is not None:
        try:
            base = to_result(parse_output(pseudo.restore(use.get("input")), task))
            base.backend, base.model = "anthropic-batch", model
        except OutputInvalid:
            base.notes = ["The model's batch draft failed validation; a clinician must draft this."]
    base.tokens_in, base.tokens_out = tokens_in + cache_write + cache_read, tokens_out
    base.cost_usd = cost
    return base


@dataclass
class BatchOutcome:
    messages: dict[str, dict] = field(default_factory=dict)  # custom_id -> succeeded message (dict)
    failed: dict[str, str] = field(default_factory=dict)  # custom_id -> result type / error type
    batches: list[str] = field(default_factory=list)


class MessageBatches:
    """Submit, poll, collect (official SDK, ``client.messages.batches``); ``sleep`` injectable."""

    def __init__(self, client: Any, *, sleep: Callable[[float], None] = time.sleep, poll_s: float = 60.0,
                 max_wait_s: float = 24 * 3600.0, clock: Callable[[], float] = time.monotonic,
                 delete: bool = True) -> None:
        self.client = client
        self.sleep, self.clock = sleep, clock
        self.poll_s, self.max_wait_s = poll_s, max_wait_s
        self.delete_after = delete

    def _submit(self, group: list[dict]) -> str:
        batch = self.client.messages.batches.create(requests=group)
        event(log, "anthropic_batch.created", count=len(group))
        return str(batch.id)

    def _wait(self, batch_id: str) -> None:
        started = self.clock()
        while True:
            batch = self.client.messages.batches.retrieve(batch_id)
            if batch.processing_status == "ended":
                return
            if self.clock() - started > self.max_wait_s:
                raise TemporaryUpstreamError("The message batch did not end in time; its results can be read later.",
                                             code="anthropic_batch_timeout")
            self.sleep(self.poll_s)

    def _collect(self, batch_id: str, out: BatchOutcome, retry: dict[str, dict], requests: dict[str, dict],
                 final: bool) -> None:
        for entry in self.client.messages.batches.results(batch_id):
            cid = entry.custom_id
            result = entry.result
            if result.type == "succeeded":
                out.messages[cid] = result.message.model_dump(exclude_none=True)
                out.failed.pop(cid, None)
            elif result.type in RETRY_TYPES and not final and cid in requests:
                retry[cid] = requests[cid]
            else:
                kind = result.type
                error = getattr(getattr(result, "error", None), "error", None)
                out.failed[cid] = f"{kind}:{getattr(error, 'type', '')}".rstrip(":")
        if self.delete_after:
            try:
                self.client.messages.batches.delete(batch_id)
            except Exception as exc:  # noqa: BLE001 - the results are in; deletion is retried by the vendor TTL
                event(log, "anthropic_batch.delete_failed", error_code=type(exc).__name__)

    def run(self, requests: Iterable[dict]) -> BatchOutcome:
        """Every request through one or more batches; errored/expired ones retried once."""
        out = BatchOutcome()
        by_id: dict[str, dict] = {}
        retry: dict[str, dict] = {}
        for group in split(requests):
            by_id = {r["custom_id"]: r for r in group}
            batch_id = self._submit(group)
            out.batches.append(batch_id)
            self._wait(batch_id)
            self._collect(batch_id, out, retry, by_id, final=False)
        if retry:
            event(log, "anthropic_batch.retry", count=len(retry))
            for group in split(retry.values()):
                batch_id = self._submit(group)
                out.batches.append(batch_id)
                self._wait(batch_id)
                self._collect(batch_id, out, {}, {}, final=True)
        return out


def project_cost(requests: list[dict], price: Price, *, output_tokens: int = 600,
                 chars_per_token: float = 3.5, min_cacheable_tokens: int = 1024) -> dict:
    """Projected USD of ``requests`` from their size (no call made): input tokens estimated from
    characters, a fixed output per request, the shared prefix read from cache after the first request
    when it is long enough to be cached, and the batch discount on everything."""
    prefix = json.dumps({"tools": requests[0]["params"]["tools"], "system": requests[0]["params"]["system"]}) \
        if requests else ""
    prefix_tokens = int(len(prefix) / chars_per_token)
    cached = prefix_tokens >= min_cacheable_tokens
    total = list_total = 0.0
    tokens_in = 0
    for i, req in enumerate(requests):
        body = json.dumps(req["params"]["messages"])
        own = int(len(body) / chars_per_token)
        tokens_in += own + prefix_tokens
        if cached:
            write, read = (prefix_tokens, 0) if i == 0 else (0, prefix_tokens)
            one = cost_usd(price, own, output_tokens, write, read)
        else:
            one = cost_usd(price, own + prefix_tokens, output_tokens)
        list_total += cost_usd(price, own + prefix_tokens, output_tokens)
        total += one * BATCH_DISCOUNT
    return {"requests": len(requests), "input_tokens_estimated": tokens_in,
            "output_tokens_assumed_per_request": output_tokens, "prefix_tokens": prefix_tokens,
            "prefix_cached": cached, "batch_cost_usd": round(total, 4),
            "list_price_without_batch_or_cache_usd": round(list_total, 4)}
