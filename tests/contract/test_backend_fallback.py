"""The fallback chain on the recorded wire formats: a fake Messages API (anthropic) and a fake
OpenAI-compatible endpoint, both behind httpx2.MockTransport, then the offline backend.
No network."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import anthropic
import httpx2
import pytest

from app.agent.backends import build_backend, chain_names, get_backend
from app.agent.backends.anthropic import AnthropicBackend
from app.agent.backends.breaker import BreakerBoard
from app.agent.backends.fallback import FallbackBackend
from app.agent.backends.offline import MODEL_ID as OFFLINE_MODEL
from app.agent.backends.openai import OpenAICompatibleBackend
from app.agent.runtime import AGENT_VERSION, run_task
from app.agent.tasks import TASKS
from app.config import load_settings
from app.errors import ConfigError
from app.writeback.builders import create_ai_device
from tests.contract.test_backend_anthropic import FakeClaude, message, overloaded, search, submit_quoting, tool_use
from tests.contract.test_backend_openai import FakeServer
from tests.contract.test_backend_openai import search as oa_search
from tests.contract.test_backend_openai import submit as oa_submit
from tests.unit.test_agent_fixtures import bundle_chart

LLAMA = "llama-3.1-70b-instruct"


def server_error(body):
    return 500, {"error": {"message": "internal error", "type": "server_error"}}


@pytest.fixture(scope="module")
def chart():
    return bundle_chart("pat-onc-02")


@pytest.fixture()
def fakes():
    return FakeClaude(), FakeServer()


def chain(fakes, *, board=None, names=("anthropic", "openai", "offline")):
    claude_fake, oa_fake = fakes
    settings = load_settings(testing=True, llm_max_retries=2, openai_base_url="http://llm.hospital.test/v1",
                             openai_model=LLAMA, llm_prices={LLAMA: {"input": 0, "output": 0}})
    client = anthropic.Anthropic(api_key="test-key", base_url="https://api.anthropic.test", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(claude_fake.handler)))
    built = {"anthropic": AnthropicBackend(settings, client=client, sleep=lambda s: None),
             "openai": OpenAICompatibleBackend(settings, sleep=lambda s: None,
                                               http=httpx2.Client(transport=httpx2.MockTransport(oa_fake.handler))),
             "offline": get_backend("offline")}
    return FallbackBackend([built[n] for n in names], board or BreakerBoard(failures=5))


def test_529_then_500_exhausted_falls_through_to_offline_which_writes(chart, fakes):
    claude_fake, oa_fake = fakes
    claude_fake.enqueue(overloaded, overloaded, overloaded)  # 1 try + 2 retries
    oa_fake.steps += [server_error] * 3
    draft = run_task(chart, TASKS["irae"], chain(fakes))
    assert len(claude_fake.requests) == 3 and len(oa_fake.requests) == 3
    assert draft.status == "completed" and draft.sentences
    assert (draft.backend, draft.model) == ("offline", OFFLINE_MODEL)
    assert draft.contract(None)["run"]["model"] == OFFLINE_MODEL and draft.ledger_row()["backend"] == "offline"
    note, = [n for n in draft.notes if n.startswith("Fallback:")]
    assert "anthropic (claude-sonnet-5-5) unavailable (model_unavailable)" in note
    assert f"openai ({LLAMA}) unavailable (model_unavailable)" in note and "written by offline" in note
    patient = chart.patient["name"][0]
    assert patient["family"] not in note and not any(g in note for g in patient["given"])
    # the Device the write-back names is the model that wrote the draft
    device = create_ai_device(model_id=draft.model, agent_version=AGENT_VERSION).model_dump(mode="json")
    assert OFFLINE_MODEL in device["deviceName"][0]["name"] and "claude" not in json.dumps(device)


def test_the_second_backend_writes_when_it_answers(chart, fakes):
    claude_fake, oa_fake = fakes
    claude_fake.enqueue(overloaded, overloaded, overloaded)
    oa_fake.steps += [oa_search, oa_submit()]
    draft = run_task(chart, TASKS["summary"], chain(fakes))
    assert (draft.status, draft.backend, draft.model) == ("completed", "openai", LLAMA)
    assert draft.sentences[0].supported and any("written by openai" in n for n in draft.notes)


def test_a_healthy_primary_writes_and_no_fallback_is_noted(chart, fakes):
    claude_fake, oa_fake = fakes
    claude_fake.enqueue(search(), submit_quoting(r"pneumonitis"))
    draft = run_task(chart, TASKS["summary"], chain(fakes))
    assert (draft.backend, draft.model) == ("anthropic", "claude-sonnet-5-5")
    assert not oa_fake.requests and not any(n.startswith("Fallback") for n in draft.notes)


def test_a_validation_escalation_is_an_answer_not_an_outage(chart, fakes):
    claude_fake, oa_fake = fakes
    bad = lambda body: (200, message([tool_use("submit_draft", {"sentences": [{"text": ""}]}, "toolu_9")]))  # noqa: E731
    claude_fake.enqueue(bad, bad)
    draft = run_task(chart, TASKS["summary"], chain(fakes))
    assert draft.status == "escalated" and draft.backend == "anthropic"
    assert not oa_fake.requests, "the chain stops at an escalation"


def test_a_refusal_moves_on_and_the_next_backend_gets_a_fresh_tool_budget(chart, fakes):
    claude_fake, oa_fake = fakes
    # anthropic searches "pneumonitis" twice, then is refused (400); the openai fake searches the same
    # query again: with the first backend's repeat memory that would be a third identical call
    same = lambda body: (200, message([tool_use("search_notes", {"query": "pneumonitis", "k": 4})]))  # noqa: E731
    claude_fake.enqueue(same, same, lambda body: (400, {"type": "error", "error": {"type": "invalid_request_error",
                                                                                "message": "bad"}}))
    oa_fake.steps += [oa_search, oa_search, oa_submit()]
    draft = run_task(chart, TASKS["summary"], chain(fakes))
    assert (draft.status, draft.backend) == ("completed", "openai")
    assert any("anthropic (claude-sonnet-5-5) unavailable (model_refused)" in n for n in draft.notes)


def test_every_backend_down_fails_with_a_clear_note(chart, fakes):
    claude_fake, oa_fake = fakes
    claude_fake.enqueue(overloaded, overloaded, overloaded)
    oa_fake.steps += [server_error] * 3
    draft = run_task(chart, TASKS["summary"], chain(fakes, names=("anthropic", "openai")))
    assert draft.status == "failed" and "No model backend is available" in draft.notes[0]
    assert "anthropic (claude-sonnet-5-5) unavailable" in draft.notes[0]


# -- configuration -------------------------------------------------------------------------------

def _settings(**kw):
    base = {"testing": True, "llm_backend": "anthropic", "anthropic_api_key": "k",
            "openai_base_url": "http://llm.hospital.test/v1", "openai_model": LLAMA,
            "llm_price_in_per_mtok": 0, "llm_price_out_per_mtok": 0}
    return load_settings(**(base | kw))


def test_chain_from_settings():
    s = _settings(llm_fallback="anthropic,openai,offline")
    assert chain_names(s) == ["anthropic", "openai", "offline"]
    assert chain_names(s, "openai") == ["openai", "offline"] and chain_names(s, "offline") == ["offline"]
    b = build_backend(s)
    assert isinstance(b, FallbackBackend) and [x.name for x in b.backends] == ["anthropic", "openai", "offline"]
    assert (b.name, b.model) == ("anthropic", "claude-sonnet-5-5")
    assert build_backend(s, "offline").name == "offline"
    single = build_backend(_settings())
    assert isinstance(single, FallbackBackend) and [x.name for x in single.backends] == ["anthropic"]


@pytest.mark.parametrize("kw,match", [
    ({"llm_fallback": "anthropic,gemini"}, "unknown backends"),
    ({"llm_fallback": "openai,anthropic"}, "starts with 'openai'"),
    ({"llm_fallback": "anthropic,anthropic"}, "twice"),
    ({"llm_fallback": "anthropic,openai", "openai_base_url": None}, "APP_OPENAI_BASE_URL"),
    ({"llm_fallback": "anthropic,openai", "llm_price_in_per_mtok": None}, "has no price"),
])
def test_a_bad_chain_is_refused_at_start_up(kw, match):
    with pytest.raises(ConfigError, match=match):
        _settings(**kw)


def test_breaker_state_is_recorded_per_backend_by_the_chain(chart, fakes):
    claude_fake, _oa = fakes
    board = BreakerBoard(failures=3, wall=lambda: datetime(2026, 12, 1, 10, tzinfo=UTC))
    claude_fake.enqueue(overloaded, overloaded, overloaded)
    run_task(chart, TASKS["irae"], chain(fakes, board=board, names=("anthropic", "offline")))
    state = {b["backend"]: b for b in board.snapshot()}
    assert state["anthropic"]["failures"] == 1 and state["anthropic"]["state"] == "closed"
    assert state["anthropic"]["last_error"] == "model_unavailable" and state["offline"]["failures"] == 0
