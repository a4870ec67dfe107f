"""The openai backend against a fake OpenAI-compatible /v1/chat/completions (as vLLM or Ollama
serve it), through httpx2.MockTransport. No network."""

from __future__ import annotations

import json
import re

import httpx2
import pytest

from app.agent.backends.openai import OpenAICompatibleBackend
from app.agent.runtime import run_task
from app.agent.tasks import TASKS
from app.config import load_settings
from app.errors import ConfigError
from tests.unit.test_agent_fixtures import bundle_chart

NOTE = re.compile(r'<note_data chunk_id="([^"]+)"[^>]*>\n(.*?)\n</note_data>', re.S)


def completion(message, finish="tool_calls", usage=(900, 120)):
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "llama-3.1-70b-instruct",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


def call(name, arguments, cid="call_1"):
    return {"tool_calls": [{"id": cid, "type": "function",
                            "function": {"name": name, "arguments": arguments}}], "content": None}


class FakeServer:
    def __init__(self):
        self.steps, self.requests = [], []

    def handler(self, request):
        assert request.url.path == "/v1/chat/completions"
        body = json.loads(request.content)
        self.requests.append((dict(request.headers), body))
        status, payload = self.steps.pop(0)(body)
        return httpx2.Response(status, json=payload)


def search(body):
    return 200, completion(call("search_notes", json.dumps({"query": "pneumonitis", "k": 4})))


def submit(fabricate=False):
    def step(body):
        tool_msgs = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        chunk_id, chunk = NOTE.findall(tool_msgs[-1])[0]
        quote = "pneumonitis treated with infliximab" if fabricate else chunk.split("\n")[0][:80]
        args = {"sentences": [{"text": "Pneumonitis on pembrolizumab.",
                               "evidence": [{"chunk_id": chunk_id, "quote": quote}]}]}
        return 200, completion(call("submit_draft", json.dumps(args), "call_2"))
    return step


@pytest.fixture(scope="module")
def chart():
    return bundle_chart("pat-onc-02")


@pytest.fixture()
def fake():
    return FakeServer()


@pytest.fixture()
def backend(fake):
    settings = load_settings(testing=True, openai_base_url="http://llm.hospital.test/v1",
                             openai_model="llama-3.1-70b-instruct", openai_api_key="local-key",
                             llm_max_retries=1, llm_price_in_per_mtok=0.5, llm_price_out_per_mtok=1.5)
    return OpenAICompatibleBackend(settings, http=httpx2.Client(transport=httpx2.MockTransport(fake.handler)),
                                   sleep=lambda s: None)


def test_tool_calls_then_submit(chart, fake, backend):
    fake.steps += [search, submit()]
    draft = run_task(chart, TASKS["summary"], backend)
    assert draft.status == "completed" and draft.sentences[0].supported
    headers, first = fake.requests[0]
    assert headers["authorization"] == "Bearer local-key"
    assert first["model"] == "llama-3.1-70b-instruct" and first["messages"][0]["role"] == "system"
    assert {t["function"]["name"] for t in first["tools"]} >= {"search_notes", "submit_draft"}
    tool_msg = fake.requests[1][1]["messages"][-1]
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == "call_1"
    assert (draft.tokens_in, draft.tokens_out) == (1800, 240)
    assert draft.cost_usd == pytest.approx((1800 * 0.5 + 240 * 1.5) / 1e6)


def test_pseudonymisation_is_off_by_default_for_in_house_models(chart, fake, backend):
    fake.steps += [search, submit()]
    run_task(chart, TASKS["summary"], backend)
    assert not any("[NAME-" in json.dumps(b) for _h, b in fake.requests)


def test_429_then_success_and_5xx_exhaustion(chart, fake, backend):
    busy = lambda body: (429, {"error": {"message": "rate limited"}})  # noqa: E731
    fake.steps += [busy, search, submit()]
    assert run_task(chart, TASKS["summary"], backend).status == "completed"
    fake.steps += [lambda body: (503, {}), lambda body: (503, {})]
    assert run_task(chart, TASKS["summary"], backend).status == "failed"


def test_malformed_arguments_and_length_stops(chart, fake, backend):
    fake.steps += [lambda body: (200, completion(call("search_notes", "{not json"))), search, submit()]
    assert run_task(chart, TASKS["summary"], backend).status == "completed"
    assert fake.requests[1][1]["messages"][-1]["content"].startswith("Error:")
    cut = lambda body: (200, completion({"content": "The patient"}, finish="length"))  # noqa: E731
    fake.steps += [cut, cut]
    assert run_task(chart, TASKS["summary"], backend).status == "escalated"


def test_fabricated_quote_is_unsupported(chart, fake, backend):
    fake.steps += [search, submit(fabricate=True)]
    assert run_task(chart, TASKS["summary"], backend).unsupported == 1


def test_missing_endpoint_settings_fail_clearly():
    with pytest.raises(ConfigError, match="APP_OPENAI_BASE_URL"):
        load_settings(testing=True, llm_backend="openai")


def test_the_in_house_model_must_be_priced_and_zero_is_a_price(chart, fake):
    base = {"testing": True, "openai_base_url": "http://llm.hospital.test/v1", "openai_model": "llama-3.1-70b-instruct"}
    with pytest.raises(ConfigError, match="has no price"):
        OpenAICompatibleBackend(load_settings(**base))
    with pytest.raises(ConfigError, match="has no price"):
        load_settings(**base, llm_backend="openai")
    free = OpenAICompatibleBackend(load_settings(**base, llm_price_in_per_mtok=0, llm_price_out_per_mtok=0),
                                   http=httpx2.Client(transport=httpx2.MockTransport(fake.handler)))
    fake.steps += [search, submit()]
    draft = run_task(chart, TASKS["summary"], free)
    assert draft.status == "completed" and draft.tokens_in == 1800 and draft.cost_usd == 0.0


def test_read_notes_pages_through_every_permitted_chunk(chart, fake, backend):
    pages = []

    def reader(body):
        last = body["messages"][-1]
        if last["role"] == "tool":
            pages.append(last["content"])
            if "Call read_notes with page" not in last["content"]:
                return submit()(body)
        return 200, completion(call("read_notes", json.dumps({"page": len(pages) + 1}), f"call_r{len(pages)}"))

    fake.steps += [reader] * 10
    draft = run_task(chart, TASKS["summary"], backend)
    seen = [cid for p in pages for cid, _ in NOTE.findall(p)]
    assert len(pages) >= 2 and f"(Page {len(pages)} of {len(pages)}.)" in pages[-1]
    assert sorted(seen) == sorted(chart.chunk_by_id()), "every permitted chunk once, none twice"
    assert draft.status == "completed" and draft.sentences[0].supported
