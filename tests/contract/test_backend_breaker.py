"""Circuit breakers per backend, with an injected clock, against the fake Messages API."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.agent.backends.breaker import CLOSED, HALF_OPEN, OPEN, BreakerBoard, CircuitBreaker, process_breakers
from app.agent.runtime import run_task
from app.agent.tasks import TASKS
from app.config import load_settings
from tests.contract.test_backend_anthropic import FakeClaude, overloaded, search, submit_quoting
from tests.contract.test_backend_fallback import chain
from tests.contract.test_backend_openai import FakeServer
from tests.unit.test_agent_fixtures import bundle_chart


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def chart():
    return bundle_chart("pat-onc-02")


@pytest.fixture()
def clock():
    return Clock()


def breaker(clock, **kw):
    return CircuitBreaker("anthropic", clock=clock, **({"failures": 3, "window_s": 60, "cooldown_s": 30} | kw))


def test_opens_after_n_failures_within_the_window_only(clock):
    b = breaker(clock)
    b.record_failure("model_unavailable")
    clock.now += 61  # the first failure leaves the window
    b.record_failure()
    b.record_failure()
    assert b.state == CLOSED and b.snapshot()["failures"] == 2
    b.record_failure()
    assert b.state == OPEN and not b.allow()
    assert b.snapshot()["opened_at"] is not None and b.retry_in_s() == pytest.approx(30)


def test_half_open_probe_after_the_cooldown_then_closed_on_success(clock):
    b = breaker(clock, failures=1)
    b.record_failure()
    clock.now += 29.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow() and b.state == HALF_OPEN
    assert not b.allow(), "one probe at a time"
    b.record_success()
    assert b.state == CLOSED and b.allow() and b.snapshot()["failures"] == 0


def test_a_failed_probe_opens_again_for_a_full_cooldown(clock):
    b = breaker(clock, failures=1)
    b.record_failure()
    clock.now += 31
    assert b.allow()
    b.record_failure("model_unavailable")
    assert b.state == OPEN and not b.allow() and b.retry_in_s() == pytest.approx(30)


def test_the_chain_skips_an_open_backend_without_calling_it_then_probes_and_closes(chart, clock):
    claude_fake, oa_fake = FakeClaude(), FakeServer()
    board = BreakerBoard(failures=2, window_s=300, cooldown_s=60, clock=clock)
    backend = chain((claude_fake, oa_fake), board=board, names=("anthropic", "offline"))
    for _ in range(2):  # two runs, each 529 after all its retries → the breaker opens
        claude_fake.enqueue(overloaded, overloaded, overloaded)
        assert run_task(chart, TASKS["irae"], backend).backend == "offline"
    assert board.get("anthropic").state == OPEN and len(claude_fake.requests) == 6

    clock.now += 30
    draft = run_task(chart, TASKS["irae"], backend)
    assert len(claude_fake.requests) == 6, "an open breaker is skipped without a call"
    assert draft.backend == "offline" and any("anthropic skipped (circuit open)" in n for n in draft.notes)

    clock.now += 31  # past the cooldown: one half-open probe, which succeeds
    claude_fake.enqueue(search(), submit_quoting(r"grade 2 immune-related pneumonitis, onset", irae=True))
    draft = run_task(chart, TASKS["irae"], backend)
    assert draft.backend == "anthropic" and len(claude_fake.requests) == 8
    assert board.get("anthropic").state == CLOSED


def test_a_single_backend_with_an_open_breaker_fails_fast_with_a_clear_error(chart, clock):
    claude_fake = FakeClaude()
    board = BreakerBoard(failures=1, cooldown_s=60, clock=clock)
    backend = chain((claude_fake, FakeServer()), board=board, names=("anthropic",))
    claude_fake.enqueue(overloaded, overloaded, overloaded)
    assert run_task(chart, TASKS["summary"], backend).status == "failed"
    draft = run_task(chart, TASKS["summary"], backend)
    assert draft.status == "failed" and len(claude_fake.requests) == 3
    assert "circuit open: anthropic" in draft.notes[0] and "about 60 s" in draft.notes[0]


def test_the_process_board_takes_its_thresholds_from_settings():
    board = process_breakers(load_settings(testing=True, llm_breaker_failures=7, llm_breaker_cooldown_s=12))
    b = board.get("breaker-test-backend")
    assert (b.failures, b.cooldown_s) == (7, 12) and process_breakers() is board
    with pytest.raises(Exception, match="APP_LLM_BREAKER_FAILURES"):
        load_settings(testing=True, llm_breaker_failures=0)


def test_admin_page_shows_the_breaker_state(tmp_path):
    from tests.unit.test_web_pages import login, make_app

    board = process_breakers()
    b = board.get("breaker-admin-test")
    b.wall = lambda: datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    for _ in range(b.failures):
        b.record_failure("model_unavailable")
    app = make_app(tmp_path)
    client = app.test_client()
    login(app, client, role="admin")
    html = client.get("/admin").get_data(as_text=True)
    row = html[html.index("<td>breaker-admin-test</td>"):].split("</tr>")[0]
    assert "<strong>open</strong>" in row and "2026-12-01T09:30:00+00:00" in row and "model_unavailable" in row
    b.record_success()
    html = client.get("/admin").get_data(as_text=True)
    row = html[html.index("<td>breaker-admin-test</td>"):].split("</tr>")[0]
    assert "<strong>closed</strong>" in row
