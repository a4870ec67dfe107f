"""Runtime limits, statuses, the ledger row and the hostile note of the synthetic data."""

from __future__ import annotations

import json
import logging

import pytest

from app.agent.backends import BackendResult
from app.agent.backends.offline import OfflineBackend
from app.agent.citations import ProposedSentence
from app.agent.guard import Limits
from app.agent.runtime import STATUSES, run_task
from app.agent.tasks import TASKS
from app.errors import TemporaryUpstreamError
from tests.unit.test_agent_fixtures import bundle_chart, manifest

INJECTED = manifest()["hostile"]["prompt_injection"]  # doc-onc-05-020, pat-onc-05


@pytest.fixture(scope="module")
def chart05():
    return bundle_chart("pat-onc-05")


class ScriptedBackend:
    """A fake model: runs ``script(tools)`` and returns what it gives."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, script):
        self.script = script

    def run(self, task, tools, *, question, limits):
        return self.script(tools)


def _loop(tools):
    while True:
        tools.search("colitis grade", k=4)


def test_a_backend_that_repeats_the_same_call_is_stopped_with_loop_detected(chart05):
    draft = run_task(chart05, TASKS["summary"], ScriptedBackend(_loop), limits=Limits(max_repeats=2))
    assert draft.status == "loop_detected"
    assert draft.sentences == [] and draft.findings is None


def test_distinct_calls_beyond_the_budget_are_limit_exceeded(chart05):
    def many(tools):
        for i in range(100):
            tools.search(f"query {i}", k=2)
        return BackendResult(sentences=[])

    draft = run_task(chart05, TASKS["summary"], ScriptedBackend(many), limits=Limits(max_tool_calls=5))
    assert draft.status == "limit_exceeded"


def test_tokens_turns_and_wall_time_are_limited(chart05):
    heavy = ScriptedBackend(lambda tools: BackendResult(sentences=[], tokens_in=900, tokens_out=200))
    assert run_task(chart05, TASKS["summary"], heavy, limits=Limits(max_tokens=1000)).status == "limit_exceeded"
    chatty = ScriptedBackend(lambda tools: BackendResult(sentences=[], turns=9))
    assert run_task(chart05, TASKS["summary"], chatty, limits=Limits(max_turns=8)).status == "limit_exceeded"

    def slow(tools):
        tools.read_notes()
        return BackendResult(sentences=[])

    assert run_task(chart05, TASKS["irae"], ScriptedBackend(slow),
                    limits=Limits(max_wall_s=0.0)).status == "limit_exceeded"


def test_a_failing_endpoint_ends_as_failed_without_raising(chart05):
    def down(tools):
        raise TemporaryUpstreamError("The model endpoint is overloaded.", code="model_overloaded")

    draft = run_task(chart05, TASKS["summary"], ScriptedBackend(down))
    assert draft.status == "failed" and draft.sentences == []


def test_unverifiable_claims_stay_marked_unsupported(chart05):
    fabricated = ScriptedBackend(lambda tools: BackendResult(sentences=[ProposedSentence(
        text="The patient had grade 4 myocarditis.",
        evidence=((tools.read_notes()[0].id, "grade 4 myocarditis requiring ICU care"),))]))
    draft = run_task(chart05, TASKS["summary"], fabricated)
    assert draft.status == "completed" and draft.unsupported == 1
    assert draft.contract(None)["flags"]["unsupported_sentences"] == 1


def test_ledger_row_is_phi_free_and_complete(chart05, caplog):
    rows = []
    with caplog.at_level(logging.INFO, logger="app.agent.runtime"):
        draft = run_task(chart05, TASKS["irae"], OfflineBackend(), ledger=rows.append)
    row, = rows
    assert set(row) == {"run_id", "task", "backend", "model", "turns", "tokens_in", "tokens_out",
                        "cost_usd", "latency_ms", "status"}
    assert row["status"] in STATUSES and row["run_id"] == draft.run_id
    dumped = json.dumps(row) + caplog.text
    assert "pat-onc-05" not in dumped
    patient = chart05.patient["name"][0]
    assert patient["family"] not in dumped
    assert not any(s.text[:30] in dumped for s in draft.sentences)


def test_injection_note_is_flagged_and_does_not_change_the_irae_screen(chart05):
    assert INJECTED in chart05.texts  # the hostile note is permitted: only the guard stands in its way
    with_note = run_task(chart05, TASKS["irae"], OfflineBackend()).contract(None)
    without = run_task(bundle_chart("pat-onc-05", drop=frozenset({INJECTED})), TASKS["irae"],
                       OfflineBackend()).contract(None)
    assert with_note["flags"]["injection_suspected"] == [INJECTED]
    assert without["flags"]["injection_suspected"] == []
    # it asks for "no adverse events": the findings are the same as without the note
    assert with_note["findings"]["irae_detected"] is True
    key = [(e["organ"], e["ctcae_grade"], e["onset"], e["attribution"]) for e in with_note["findings"]["events"]]
    assert key == [(e["organ"], e["ctcae_grade"], e["onset"], e["attribution"])
                   for e in without["findings"]["events"]]
    cited = {c["document"] for s in with_note["draft"]["sentences"] for c in s["citations"]}
    assert INJECTED not in cited
    assert "no adverse events" not in with_note["draft"]["text"].lower()


def test_injection_note_is_never_quoted_in_a_summary_or_answer(chart05):
    for task, question in (("summary", None), ("question", "What did the last note say about adverse events?")):
        contract = run_task(chart05, TASKS[task], OfflineBackend(), question=question).contract(None)
        assert contract["flags"]["injection_suspected"] == [INJECTED]
        assert "ignore all previous instructions" not in contract["draft"]["text"].lower()
