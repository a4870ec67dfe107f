"""The anthropic backend against a fake Messages API (httpx2.MockTransport; the SDK's own HTTP
client library). Realistic exchanges: tool_use blocks, end_turn, 529 overloaded, a max_tokens
stop, malformed tool input, and a fabricated quote. No network."""

from __future__ import annotations

import json
import re

import anthropic
import httpx2
import pytest

from app.agent.backends.anthropic import AnthropicBackend
from app.agent.guard import Limits
from app.agent.runtime import run_task
from app.agent.tasks import TASKS
from app.config import load_settings
from tests.unit.test_agent_fixtures import bundle_chart

MODEL = "claude-sonnet-5-5"  # the default since claude-sonnet-4-5 reached end of life (2026-11-30)
NOTE = re.compile(r'<note_data chunk_id="([^"]+)"[^>]*>\n(.*?)\n</note_data>', re.S)


class FakeClaude:
    """A scripted Messages API: each queued step is a callable(request_json) -> (status, body)."""

    def __init__(self):
        self.steps = []
        self.requests: list[dict] = []

    def enqueue(self, *steps):
        self.steps.extend(steps)

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.host == "api.anthropic.test"
        body = json.loads(request.content)
        self.requests.append(body)
        status, payload = self.steps.pop(0)(body)
        return httpx2.Response(status, json=payload)


def message(content, stop="tool_use", usage=(1200, 150, 0, 0)):
    return {"id": "msg_01Xfake", "type": "message", "role": "assistant", "model": MODEL, "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                      "cache_creation_input_tokens": usage[2], "cache_read_input_tokens": usage[3]}}


def tool_use(name, args, tid="toolu_01"):
    return {"type": "tool_use", "id": tid, "name": name, "input": args}


def search(query="pneumonitis grade", tid="toolu_01"):
    return lambda body: (200, message([{"type": "text", "text": "Searching the notes."},
                                       tool_use("search_notes", {"query": query, "k": 4}, tid)]))


def last_tool_results(body) -> list[dict]:
    return [b for b in body["messages"][-1]["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]


def submit_quoting(pattern: str, *, fabricate: bool = False, irae: bool = False):
    """Answer with a sentence quoting, verbatim, a sentence from the last tool result that matches."""
    def step(body):
        text = "\n".join(r["content"] for r in last_tool_results(body) if isinstance(r["content"], str))
        for chunk_id, chunk in NOTE.findall(text):  # noqa: B007 (used after the loop)
            m = re.search(r"[^.\n]*" + pattern + r"[^.\n]*", chunk, re.I)
            if m:
                quote = m.group(0).strip()
                break
        else:
            raise AssertionError("the fake found nothing to quote")
        if fabricate:
            quote = "grade 4 pneumonitis requiring intubation on 2026-03-01"
        out = {"sentences": [{"text": "Grade 2 immune-related pneumonitis on pembrolizumab.",
                              "evidence": [{"chunk_id": chunk_id, "quote": quote}]}], "answer_found": True}
        if irae:
            out["irae"] = {"irae_detected": True, "events": [
                {"organ": "pulmonary", "term": "pneumonitis", "ctcae_grade": 2, "attribution": "ici",
                 "onset": re.search(r"\d{4}-\d{2}-\d{2}", quote).group(0) if re.search(r"\d{4}-\d{2}-\d{2}", quote)
                 else None, "status": "resolved", "sentence_indexes": [0]}]}
        return 200, message([tool_use("submit_draft", out, "toolu_02")], usage=(2400, 300, 0, 1800))
    return step


def overloaded(body):
    return 529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@pytest.fixture(scope="module")
def chart():
    return bundle_chart("pat-onc-02")


@pytest.fixture()
def fake():
    return FakeClaude()


@pytest.fixture()
def backend(fake):
    sleeps: list[float] = []
    settings = load_settings(testing=True, anthropic_model=MODEL, llm_max_retries=2)
    client = anthropic.Anthropic(api_key="test-key", base_url="https://api.anthropic.test", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(fake.handler)))
    b = AnthropicBackend(settings, client=client, sleep=sleeps.append)
    b.sleeps = sleeps
    return b


def test_tool_use_then_submit_is_completed_with_verified_citations(chart, fake, backend):
    fake.enqueue(search(), submit_quoting(r"grade 2 immune-related pneumonitis, onset"))
    draft = run_task(chart, TASKS["summary"], backend)
    assert draft.status == "completed" and draft.turns == 2
    assert draft.sentences[0].supported, "the restored quote is found in the original note"
    first = fake.requests[0]
    assert first["model"] == MODEL
    assert first["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert [t["name"] for t in first["tools"]] == ["search_notes", "list_conditions",
                                                   "read_patient_demographics", "read_notes", "submit_draft"]
    # the tool result went back as delimited data
    result, = last_tool_results(fake.requests[1])
    assert result["tool_use_id"] == "toolu_01" and result["content"].startswith("<note_data")
    assert draft.tokens_in == 1200 + 2400 + 1800 and draft.tokens_out == 450
    # claude-sonnet-5-5 list prices from prices.yaml: $2 in, $10 out, $0.20 cache read per MTok
    assert draft.cost_usd == pytest.approx((1200 * 2 + 150 * 10 + 2400 * 2 + 1800 * 0.2 + 300 * 10) / 1e6)


def test_names_identifiers_and_dates_are_pseudonymised_before_the_call(chart, fake, backend):
    fake.enqueue(search("pneumonitis onset"), submit_quoting(r"onset \d{4}-\d{2}-\d{2}"))
    draft = run_task(chart, TASKS["summary"], backend)
    sent = json.dumps(fake.requests)
    patient = chart.patient
    for value in [patient["name"][0]["family"], *patient["name"][0]["given"],
                  *(i["value"] for i in patient.get("identifier", []))]:
        assert value not in sent
    assert "2026-03-22" not in sent  # the onset date, shifted
    assert draft.sentences[0].supported and "2026-03-22" in draft.sentences[0].citations[0].quote


def test_529_overloaded_is_retried_then_succeeds(chart, fake, backend):
    fake.enqueue(overloaded, search(), submit_quoting(r"pneumonitis"))
    draft = run_task(chart, TASKS["summary"], backend)
    # one retry, after the policy's first jittered backoff (app/retry.py)
    assert draft.status == "completed" and len(backend.sleeps) == 1 and 0 < backend.sleeps[0] <= 0.5


def test_overloaded_every_time_fails_without_leaking_text(chart, fake, backend, caplog):
    fake.enqueue(overloaded, overloaded, overloaded)
    draft = run_task(chart, TASKS["summary"], backend)
    assert draft.status == "failed" and len(fake.requests) == 3
    assert "overloaded" in draft.notes[0].lower() and "Overloaded" not in caplog.text


def test_end_turn_without_a_draft_gets_one_reminder(chart, fake, backend):
    fake.enqueue(lambda body: (200, message([{"type": "text", "text": "Here is a summary..."}], stop="end_turn")),
                 search(), submit_quoting("pneumonitis"))
    assert run_task(chart, TASKS["summary"], backend).status == "completed"
    assert "submit_draft" in fake.requests[1]["messages"][-1]["content"]


def test_max_tokens_stop_is_repaired_once_then_escalated(chart, fake, backend):
    cut = lambda body: (200, message([{"type": "text", "text": "The patient has"}], stop="max_tokens"))  # noqa: E731
    fake.enqueue(cut, search(), submit_quoting("pneumonitis"))
    assert run_task(chart, TASKS["summary"], backend).status == "completed"
    fake.enqueue(cut, cut)
    draft = run_task(chart, TASKS["summary"], backend)
    assert draft.status == "escalated" and draft.sentences == []


def test_malformed_tool_input_gets_an_error_result_and_the_run_continues(chart, fake, backend):
    fake.enqueue(lambda body: (200, message([tool_use("search_notes", {"query": 5})])),
                 search(), submit_quoting("pneumonitis"))
    draft = run_task(chart, TASKS["summary"], backend)
    err, = last_tool_results(fake.requests[1])
    assert err["is_error"] is True and "query" in err["content"]
    assert draft.status == "completed"


def test_invalid_draft_is_repaired_once_then_escalated(chart, fake, backend):
    bad = lambda body: (200, message([tool_use("submit_draft", {"sentences": [{"text": ""}]}, "toolu_09")]))  # noqa: E731
    fake.enqueue(bad, bad)
    draft = run_task(chart, TASKS["summary"], backend)
    assert draft.status == "escalated"
    repair, = last_tool_results(fake.requests[1])
    assert repair["is_error"] and "sentences.0.text" in repair["content"]


def test_fabricated_quote_is_marked_unsupported(chart, fake, backend):
    fake.enqueue(search(), submit_quoting("pneumonitis", fabricate=True))
    contract = run_task(chart, TASKS["summary"], backend).contract(None)
    assert contract["draft"]["sentences"][0]["supported"] is False
    assert contract["flags"]["unsupported_sentences"] == 1


def test_irae_findings_come_back_with_citations(chart, fake, backend):
    fake.enqueue(search(), submit_quoting(r"grade 2 immune-related pneumonitis, onset", irae=True))
    contract = run_task(chart, TASKS["irae"], backend).contract(None)
    event, = contract["findings"]["events"]
    assert contract["findings"]["irae_detected"] is True
    assert event["onset"] == "2026-03-22" and event["citations"][0]["document"].startswith("doc-onc-02-")


def test_a_model_repeating_the_same_search_is_loop_detected(chart, fake, backend):
    fake.enqueue(search(), search(), search())
    draft = run_task(chart, TASKS["summary"], backend, limits=Limits(max_repeats=2))
    assert draft.status == "loop_detected"


def test_turn_limit(chart, fake, backend):
    fake.enqueue(*(search(f"query {i}") for i in range(3)))
    assert run_task(chart, TASKS["summary"], backend, limits=Limits(max_turns=3)).status == "limit_exceeded"


# -- the current model, its price, and the request it is sent --------------------------------------

def test_default_model_is_the_current_sonnet_and_no_sampling_parameters_are_sent(chart, fake, recwarn):
    import warnings

    settings = load_settings(testing=True, llm_max_retries=0)  # the defaults
    assert settings.anthropic_model == "claude-sonnet-5-5"
    client = anthropic.Anthropic(api_key="test-key", base_url="https://api.anthropic.test", max_retries=0,
                                 http_client=httpx2.Client(transport=httpx2.MockTransport(fake.handler)))
    fake.enqueue(search(), submit_quoting(r"pneumonitis"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the SDK warns for an end-of-life model
        draft = run_task(chart, TASKS["summary"], AnthropicBackend(settings, client=client))
    assert draft.status == "completed" and draft.model == "claude-sonnet-5-5"
    for body in fake.requests:  # Sonnet 5.x answers 400 to non-default sampling parameters
        assert body["model"] == "claude-sonnet-5-5"
        assert not {"temperature", "top_p", "top_k"} & body.keys(), body.keys()
        assert set(body) == {"model", "max_tokens", "messages", "system", "tools"}


def test_prices_come_from_the_data_file_with_cache_writes_and_reads(chart, fake, backend):
    from app.agent.backends.llm import PRICES_FILE, Price, load_prices

    assert PRICES_FILE.name == "prices.yaml"
    assert load_prices()["claude-sonnet-5-5"] == Price(input=2.0, output=10.0, cache_read=0.2, cache_write=2.5)
    fake.enqueue(lambda body: (200, message([tool_use("search_notes", {"query": "pneumonitis", "k": 4})],
                                            usage=(1000, 100, 5000, 0))),
                 submit_quoting(r"pneumonitis"))
    draft = run_task(chart, TASKS["summary"], backend)
    # 1000 + 2400 in at $2, 5000 cache write (5 min) at $2.50, 1800 cache read at $0.20, 400 out at $10
    assert draft.cost_usd == pytest.approx((3400 * 2 + 5000 * 2.5 + 1800 * 0.2 + 400 * 10) / 1e6)


def test_a_model_without_a_price_is_refused_unless_priced_by_configuration():
    from app.errors import ConfigError

    with pytest.raises(ConfigError, match="'claude-sonnet-4-5' has no price") as err:
        AnthropicBackend(load_settings(testing=True, anthropic_model="claude-sonnet-4-5"))
    assert err.value.code == "model_unpriced"
    with pytest.raises(ConfigError, match="has no price"):  # at start-up, before any request
        load_settings(testing=True, llm_backend="anthropic", anthropic_api_key="k", anthropic_model="claude-next-9")
    priced = load_settings(testing=True, llm_backend="anthropic", anthropic_api_key="k",
                           anthropic_model="claude-next-9", llm_prices={"claude-next-9": {"input": 4, "output": 20}})
    assert AnthropicBackend(priced).prices.input == 4
    # configured prices override the list price of a listed model
    negotiated = load_settings(testing=True, llm_prices={"claude-sonnet-5-5": {"input": 1.5, "output": 8}})
    assert AnthropicBackend(negotiated).prices.output == 8
    with pytest.raises(ConfigError, match="numeric 'input' and 'output'"):
        AnthropicBackend(load_settings(testing=True, llm_prices={"claude-sonnet-5-5": {"input": 1}}))


def test_a_broken_price_file_is_a_clear_error(tmp_path):
    from app.agent.backends.llm import load_prices
    from app.errors import ConfigError

    bad = tmp_path / "prices.yaml"
    bad.write_text("models:\n  m1: {input: -1, output: 2}\n")
    with pytest.raises(ConfigError, match="negative"):
        load_prices(bad)
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_prices(bad)
