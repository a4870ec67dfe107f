"""Hybrid mode against a fake Messages API with realistic token counts.

The fake "reads like a screen": it calls ``read_notes`` page after page until the tool result says
there is no more, then submits a draft quoting a sentence it was shown. Its ``usage`` is counted
from what was actually sent: ``input_tokens`` = bytes of the request body / 4 (system, tools and
the whole conversation, as the Messages API bills every turn), ``output_tokens`` = bytes of its
answer / 4. The same fake and the same chart are run twice: the model reading every permitted note
(the anthropic backend on the chart's tools), and hybrid mode (offline engine first, the model
reading only its candidates). ``python -m tests.contract.test_backend_hybrid`` prints the figures
for every oncology chart of synthetic_data/.
"""

from __future__ import annotations

import json
import math
import re
import sys

import anthropic
import httpx2
import pytest

from app.agent.backends import BackendResult, build_backend, get_backend
from app.agent.backends.anthropic import AnthropicBackend
from app.agent.backends.breaker import BreakerBoard
from app.agent.backends.fallback import FallbackBackend
from app.agent.backends.hybrid import CandidateTools, HybridBackend
from app.agent.citations import ProposedSentence
from app.agent.guard import Limits
from app.agent.runtime import run_task
from app.agent.tasks import TASKS
from app.config import load_settings
from app.errors import ConfigError
from tests.contract.test_backend_anthropic import NOTE, message, overloaded, tool_use
from tests.unit.test_agent_fixtures import bundle_chart, gold

MODEL = "claude-sonnet-5-5"
PAGE = re.compile(r"\(Page (\d+) of (\d+)\.")
TERMS = re.compile(r"pneumonitis|colitis|hepatitis|thyroiditis|hypothyroid|dermatitis|rash|hypophysitis|"
                   r"myocarditis|nephritis|diarrh", re.I)
ORGAN = {"pneumonitis": "pulmonary", "colitis": "gastrointestinal", "diarrh": "gastrointestinal",
         "hepatitis": "hepatic", "thyroiditis": "endocrine", "hypothyroid": "endocrine", "hypophysitis": "endocrine",
         "dermatitis": "skin", "rash": "skin", "myocarditis": "cardiac", "nephritis": "renal"}
BIG = Limits(max_tokens=10**7, max_turns=40, max_tool_calls=200)


def tokens(n_bytes: int) -> int:
    return math.ceil(n_bytes / 4)


class ReadingClaude:
    """A Messages API fake that reads every page of read_notes, then submits; usage from sizes."""

    def __init__(self, task: str = "irae"):
        self.task = task
        self.requests: list[dict] = []
        self.request_bytes: list[int] = []
        self.fail_first = 0

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        self.request_bytes.append(len(request.content))
        if self.fail_first:
            self.fail_first -= 1
            status, payload = overloaded(body)
            return httpx2.Response(status, json=payload)
        content = self.answer(body)
        out_tokens = tokens(len(json.dumps(content)))
        return httpx2.Response(200, json=message(content, usage=(tokens(len(request.content)), out_tokens, 0, 0)))

    def answer(self, body: dict) -> list[dict]:
        results = [b["content"] for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
                   for b in m["content"] if b.get("type") == "tool_result" and isinstance(b["content"], str)]
        n = len(self.requests)
        if not results:
            return [tool_use("read_notes", {"page": 1}, f"toolu_{n}")]
        page = PAGE.search(results[-1])
        if page and int(page.group(1)) < int(page.group(2)):
            return [tool_use("read_notes", {"page": int(page.group(1)) + 1}, f"toolu_{n}")]
        shown = [pair for text in results for pair in NOTE.findall(text)]
        return [tool_use("submit_draft", self.draft(shown), f"toolu_{n}")]

    def draft(self, shown: list[tuple[str, str]]) -> dict:
        pick = None
        for chunk_id, text in shown:
            for m in re.finditer(r"[^.\n]{12,200}", text):
                if TERMS.search(m.group(0)):
                    pick = (chunk_id, m.group(0).strip(), TERMS.search(m.group(0)).group(0).lower())
                    break
            if pick:
                break
        if pick is None:
            out = {"sentences": [], "answer_found": True}
            if self.task == "irae":
                out["irae"] = {"irae_detected": False, "events": []}
            return out
        chunk_id, quote, term = pick
        out = {"sentences": [{"text": f"Possible immune-related {term}.", "evidence": [
            {"chunk_id": chunk_id, "quote": quote}]}], "answer_found": True}
        if self.task == "irae":
            organ = next(v for k, v in ORGAN.items() if term.startswith(k))
            out["irae"] = {"irae_detected": True, "events": [
                {"organ": organ, "term": term, "ctcae_grade": 2, "attribution": "ici", "status": "active",
                 "sentence_indexes": [0]}]}
        return out


def claude(fake: ReadingClaude, **settings) -> AnthropicBackend:
    s = load_settings(testing=True, llm_pseudonymise=False, **settings)
    client = anthropic.Anthropic(api_key="test-key", base_url="https://api.anthropic.test", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(fake.handler)))
    return AnthropicBackend(s, client=client, sleep=lambda s: None)


def shown_chunks(fake: ReadingClaude) -> set[str]:
    """The chunk ids the fake model was shown, from the recorded requests."""
    return {cid for body in fake.requests for m in body["messages"] if isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_result" for cid, _ in NOTE.findall(b["content"])}


def measure(patient: str, task: str = "irae") -> dict:
    """Tokens and cost of one run reading every note vs hybrid mode, on the same chart and fake."""
    chart = bundle_chart(patient)
    out: dict = {"patient": patient, "task": task}
    for mode in ("all_notes", "hybrid"):
        fake = ReadingClaude(task)
        model = claude(fake)
        backend = model if mode == "all_notes" else HybridBackend(model, get_backend("offline"))
        draft = run_task(chart, TASKS[task], backend, limits=BIG)
        assert draft.status == "completed", (patient, mode, draft.status, draft.notes)
        out[mode] = {"tokens_in": draft.tokens_in, "tokens_out": draft.tokens_out,
                     "cost_usd": round(draft.cost_usd, 5), "calls": len(fake.requests),
                     "bytes_sent": sum(fake.request_bytes), "billed_in": sum(tokens(b) for b in fake.request_bytes),
                     "supported": [s.supported for s in draft.sentences],
                     "model": draft.model, "chunks_shown": len(shown_chunks(fake))}
        if mode == "hybrid":
            docs = {chart.chunk_by_id()[c].document_id for c in shown_chunks(fake)}
            label = next((g for g in gold() if g["patient"] == patient), {"events": []})
            wanted = {d for e in label["events"] for d in e["evidence_documents"]}
            out["gold_evidence_docs"], out["gold_evidence_docs_shown"] = len(wanted), len(wanted & docs)
    out["chunks_permitted"] = len(chart.chunk_by_id())
    out["ratio"] = (out["hybrid"]["tokens_in"] + out["hybrid"]["tokens_out"]) / (
        out["all_notes"]["tokens_in"] + out["all_notes"]["tokens_out"])
    return out


# -- the reduction, asserted as a ratio that could fail ---------------------------------------------

def test_hybrid_sends_less_than_half_the_tokens_of_reading_every_note():
    figures = measure("pat-onc-02")
    all_notes, hybrid = figures["all_notes"], figures["hybrid"]
    assert all_notes["calls"] >= 3, "the chart spans several read_notes pages"
    assert figures["ratio"] < 0.5, figures
    assert hybrid["cost_usd"] < 0.5 * all_notes["cost_usd"]
    # the usage the backend accounted is the usage the fake billed for what was really sent
    assert all_notes["tokens_in"] == all_notes["billed_in"] and hybrid["tokens_in"] == hybrid["billed_in"]
    # cost from prices.yaml: $2 per MTok in, $10 out
    assert hybrid["cost_usd"] == pytest.approx((hybrid["tokens_in"] * 2 + hybrid["tokens_out"] * 10) / 1e6, abs=1e-5)
    # and the hybrid draft is still a verified draft, by the model
    assert hybrid["supported"] == [True] and hybrid["model"] == MODEL


def test_the_model_reads_the_chunks_the_offline_engine_cited():
    chart = bundle_chart("pat-onc-02")
    offline = run_task(chart, TASKS["irae"], get_backend("offline"))
    cited = {c.document for s in offline.sentences for c in s.citations}
    assert cited, "the offline screen cites evidence on this chart"
    fake = ReadingClaude()
    draft = run_task(chart, TASKS["irae"], HybridBackend(claude(fake), get_backend("offline")), limits=BIG)
    shown = shown_chunks(fake)
    shown_docs = {chart.chunk_by_id()[cid].document_id for cid in shown}
    assert cited <= shown_docs, "every note the offline engine cited reached the model"
    label, = [g for g in gold() if g["patient"] == "pat-onc-02"]
    assert {d for e in label["events"] for d in e["evidence_documents"]} <= shown_docs, "the gold evidence too"
    assert len(shown) < len(chart.chunk_by_id()) / 2
    assert any(n.startswith("Hybrid: the model read") for n in draft.notes)


def test_candidate_tools_restrict_search_and_read_notes_with_a_small_extra_budget():
    chart = bundle_chart("pat-onc-02")
    from app.agent.runtime import ChartTools

    tools = ChartTools(chart, Limits())
    all_ids = list(chart.chunk_by_id())
    keep = all_ids[:3]
    view = CandidateTools(tools, keep, extra_hits=2)
    assert {c.id for c in view.read_notes()} == set(keep)
    hits = [r.chunk.id for q in ("pneumonitis", "colitis diarrhoea", "thyroid") for r in view.search(q, k=6)]
    assert len([h for h in hits if h not in keep]) <= 2, "no more than the extra budget of other chunks"


def test_hybrid_falls_back_to_the_offline_draft_when_no_model_is_available():
    chart = bundle_chart("pat-onc-02")
    fake = ReadingClaude()
    fake.fail_first = 99
    model = FallbackBackend([claude(fake, llm_max_retries=1)], BreakerBoard())
    draft = run_task(chart, TASKS["irae"], HybridBackend(model, get_backend("offline"), offline_fallback=True))
    assert draft.status == "completed" and draft.backend == "offline" and len(fake.requests) == 2
    assert any("written by offline" in n for n in draft.notes)
    without = run_task(chart, TASKS["irae"], HybridBackend(model, get_backend("offline")))
    assert without.status == "failed"


def test_hybrid_when_the_offline_pass_fails_reads_the_chart_as_usual():
    class Broken:
        name, model = "offline", "broken-1"

        def run(self, task, tools, *, question, limits):
            from app.agent.runtime import LimitExceeded

            raise LimitExceeded("The agent repeated the same tool call.", code="loop_detected")

    fake = ReadingClaude()
    draft = run_task(bundle_chart("pat-onc-02"), TASKS["irae"], HybridBackend(claude(fake), Broken()), limits=BIG)
    assert draft.status == "completed" and any("offline pass failed (loop_detected)" in n for n in draft.notes)
    assert len(fake.requests) >= 3, "the model paged through every note"


def test_build_backend_hybrid_mode_from_settings():
    s = load_settings(testing=True, llm_backend="anthropic", anthropic_api_key="k", llm_hybrid=True,
                      llm_fallback="anthropic,offline")
    b = build_backend(s)
    assert isinstance(b, HybridBackend) and b.offline_fallback and b.name == "anthropic" and b.model == MODEL
    assert [x.name for x in b.inner.backends] == ["anthropic"]
    with pytest.raises(ConfigError, match="APP_LLM_HYBRID"):
        load_settings(testing=True, llm_hybrid=True)
    assert isinstance(build_backend(load_settings(testing=True), hybrid=False), type(get_backend("offline")))
    assert isinstance(build_backend(s, "offline"), type(get_backend("offline"))), "offline chosen explicitly"


def test_candidate_ids_put_cited_chunks_first():
    from app.agent.backends.hybrid import candidate_ids

    chart = bundle_chart("pat-onc-02")
    chunks = sorted(chart.chunk_by_id().values(), key=lambda c: c.id)
    first = BackendResult(sentences=[ProposedSentence(text="x", evidence=((chunks[5].id, "q"),)),
                                     ProposedSentence(text="y", evidence=(("not-a-chunk", "q"),))])
    ids = candidate_ids(TASKS["irae"], first, chunks, [])
    assert ids[0] == chunks[5].id and "not-a-chunk" not in ids
    assert all(chart.chunk_by_id()[i].document_id == chunks[5].document_id for i in ids)


def main() -> None:  # pragma: no cover - the measurement, printed for docs/agent.md
    patients = [g["patient"] for g in gold()]
    rows = [measure(p) for p in patients]
    keys = ("tokens_in", "tokens_out", "cost_usd", "calls")
    for r in rows:
        print(r["patient"], {m: {k: r[m][k] for k in keys} for m in ("all_notes", "hybrid")}, f"{r['ratio']:.3f}")
    n = len(rows)
    for m in ("all_notes", "hybrid"):
        t = sum(r[m]["tokens_in"] + r[m]["tokens_out"] for r in rows) / n
        c = sum(r[m]["cost_usd"] for r in rows) / n
        print(f"{m}: mean tokens per patient {t:.0f}, mean cost per patient ${c:.4f}")
    shown = sum(r["hybrid"]["chunks_shown"] for r in rows) / n
    permitted = sum(r["chunks_permitted"] for r in rows) / n
    print(f"chunks shown in hybrid mode: mean {shown:.1f} of {permitted:.1f} permitted")
    wanted, got = sum(r["gold_evidence_docs"] for r in rows), sum(r["gold_evidence_docs_shown"] for r in rows)
    print(f"gold evidence notes shown to the model in hybrid mode: {got}/{wanted}")
    ratios = sorted(r["ratio"] for r in rows)
    print(f"ratio hybrid/all: mean {sum(ratios) / n:.3f}, min {ratios[0]:.3f}, max {ratios[-1]:.3f}, n={n}")
    json.dump(rows, sys.stdout if "--json" in sys.argv else open("/dev/null", "w"))


if __name__ == "__main__":  # pragma: no cover
    main()
