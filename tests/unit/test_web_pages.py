"""Web pages without servers: iframe cookies, EHR styling, admin access, error next steps, run jobs."""

from __future__ import annotations

import pytest

from app import create_app
from app.web.state import LaunchState, RunJob
from app.web.style import style_css


def make_app(tmp_path, **extra):
    return create_app({"testing": True, "data_dir": tmp_path, "allowed_iss": "https://ehr.test/fhir", **extra})


def login(app, client, *, role="clinician", sid="s1"):
    """Put an open-server style state in place (no tokens needed) and bind the browser to it."""
    app.extensions["smart_draft_web"].put(LaunchState(
        sid=sid, fhir_base="https://ehr.test/fhir", config=None, patient_id="p1", user_reference=None,
        role=role, unauthenticated=True, smart_style_url="https://ehr.test/style.json"))
    with client.session_transaction() as sess:
        sess["sid"] = sid
    return app.extensions["smart_draft_web"].get(sid)


def test_inside_an_ehr_iframe_over_https_cookies_are_samesite_none_secure(tmp_path):
    app = make_app(tmp_path, redirect_uri="https://app.test/callback")
    resp = app.test_client().get("/healthz")
    cookie = resp.headers.get("Set-Cookie", "")
    assert "SameSite=None" in cookie and "Secure" in cookie and "HttpOnly" in cookie
    assert "frame-ancestors 'self' https://ehr.test" in resp.headers["Content-Security-Policy"]


def test_style_keeps_well_formed_values_only():
    css = style_css({"color_highlight": "#0b5cad", "color_background": "red;} body{display:none",
                     "font_family_body": "Arial, sans-serif", "color_text": "url(javascript:alert(1))",
                     "dim_border_radius": "4px"})
    assert "--sda-highlight: #0b5cad;" in css and "--sda-font: Arial, sans-serif;" in css
    assert "display:none" not in css and "javascript" not in css and "--sda-text" not in css
    assert style_css("not a dict") == "" and style_css({}) == ""


def test_style_is_fetched_only_from_an_allowed_ehr_origin(tmp_path):
    import responses

    app = make_app(tmp_path)
    client = app.test_client()
    with responses.RequestsMock() as mock:
        mock.get("https://ehr.test/style.json", json={"color_highlight": "#123456"})
        state = login(app, client)
        assert "#123456" in client.get("/ehr-style.css").get_data(as_text=True)
        state.style_css, state.smart_style_url = None, "https://evil.test/style.json"
        assert client.get("/ehr-style.css").get_data(as_text=True) == ""
        assert [c.request.url for c in mock.calls] == ["https://ehr.test/style.json"]


@pytest.mark.parametrize("role,status", [("clinician", 403), ("nurse", 403), ("admin", 200)])
def test_admin_page_is_for_admins_only(tmp_path, role, status):
    app = make_app(tmp_path)
    client = app.test_client()
    login(app, client, role=role)
    resp = client.get("/admin")
    assert resp.status_code == status
    if status == 200:
        assert b"Outbox depth" in resp.data and b"Override rate" in resp.data


def test_error_pages_say_what_to_do_next(tmp_path):
    resp = make_app(tmp_path).test_client().get("/launch?iss=https://evil.test/fhir&launch=x")
    assert b"What to do next" in resp.data and b"allowlist" in resp.data


def test_cancelling_a_run_marks_it_and_the_page_says_nothing_was_written(tmp_path):
    app = make_app(tmp_path)
    client = app.test_client()
    state = login(app, client)
    state.jobs["k1"] = RunJob(key="k1", task="summary")
    page = client.get("/runs/k1")
    assert b"Cancel" in page.data
    csrf = page.get_data(as_text=True).split('name="csrf-token" content="')[1].split('"')[0]
    client.post("/runs/k1/cancel", data={"csrf_token": csrf})
    assert state.jobs["k1"].cancel.is_set() and state.jobs["k1"].state == "cancelled"
    assert b"Nothing was written" in client.get("/runs/k1").data
    assert client.get("/api/runs/k1").get_json()["state"] == "cancelled"
    assert client.get("/runs/unknown").status_code == 404


def test_unknown_task_is_refused_before_any_run(tmp_path):
    app = make_app(tmp_path)
    client = app.test_client()
    state = login(app, client)
    html = client.get("/admin").get_data(as_text=True)  # any page: for the CSRF token
    csrf = html.split('name="csrf-token" content="')[1].split('"')[0]
    resp = client.post("/drafts", data={"task": "bogus", "csrf_token": csrf})
    assert resp.status_code == 400 and b"unknown_task" in resp.data and state.jobs == {}


class SlowDrafting:
    """Stands in for DraftingService: drafting and writing each wait for the test to let them go."""

    def __init__(self):
        import threading

        self.go_draft, self.go_write = threading.Event(), threading.Event()
        self.writes = 0

    def draft(self, chart, task, question=None, actor=None):  # type: ignore[no-untyped-def]
        from app.agent.runtime import Draft

        assert self.go_draft.wait(10)
        return Draft(run_id="run-1", task=task, patient_id="p1", status="completed", sentences=[],
                     findings=None, injection_suspected=[], backend="offline", model="m", turns=1,
                     tokens_in=0, tokens_out=0, cost_usd=0.0, latency_ms=1, prompt_version="v")

    def write(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        assert self.go_write.wait(10)
        self.writes += 1
        return {"state": "written", "written": {"document_reference": "DocumentReference/x"}, "reason": None}


def start_slow_run(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    import app.web.drafts as drafts

    fake = SlowDrafting()
    monkeypatch.setattr(drafts, "services", lambda: type("S", (), {"drafting": lambda self: fake})())
    monkeypatch.setattr(drafts, "wait_ready", lambda state: None)
    monkeypatch.setattr(drafts, "client_for", lambda state: None)
    monkeypatch.setattr(drafts, "actor_for", lambda state: None)
    app = make_app(tmp_path)
    client = app.test_client()
    state = login(app, client)
    html = client.get("/admin").get_data(as_text=True)
    csrf = html.split('name="csrf-token" content="')[1].split('"')[0]
    resp = client.post("/drafts", data={"task": "summary", "csrf_token": csrf})
    key = resp.headers["Location"].rsplit("/", 1)[1]
    return fake, client, state, state.jobs[key], csrf


def wait_for(predicate, timeout=10.0):  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_cancel_before_the_write_writes_nothing(tmp_path, monkeypatch):
    fake, client, state, job, csrf = start_slow_run(tmp_path, monkeypatch)
    client.post(f"/runs/{job.key}/cancel", data={"csrf_token": csrf})
    fake.go_draft.set()
    fake.go_write.set()
    wait_for(lambda: job.cancel.is_set() and job.run_id is None and job.state == "cancelled")
    import time

    time.sleep(0.2)
    assert fake.writes == 0 and state.drafts == {}
    assert b"Nothing was written" in client.get(f"/runs/{job.key}").data


def test_cancel_after_the_write_started_is_refused_and_says_so(tmp_path, monkeypatch):
    fake, client, state, job, csrf = start_slow_run(tmp_path, monkeypatch)
    fake.go_draft.set()
    wait_for(lambda: job.state == "writing")
    client.post(f"/runs/{job.key}/cancel", data={"csrf_token": csrf})
    assert job.state == "writing" and not job.cancel.is_set()
    assert b"too late to cancel" in client.get(f"/runs/{job.key}").data
    fake.go_write.set()
    wait_for(lambda: job.state == "done")
    assert fake.writes == 1


def test_preparing_notes_can_be_cancelled_and_restarted(tmp_path, monkeypatch):
    import app.web.chart as chart_page
    from app.retrieval.indexer import IndexProgress

    app = make_app(tmp_path)
    client = app.test_client()
    state = login(app, client)
    building = type("Chart", (), {"progress": IndexProgress(total=40, done=5, state="indexing")})()
    state.chart = building
    html = client.get("/admin").get_data(as_text=True)
    csrf = html.split('name="csrf-token" content="')[1].split('"')[0]
    assert client.post("/index/cancel").status_code == 403  # CSRF as every form
    resp = client.post("/index/cancel", data={"csrf_token": csrf})
    assert resp.status_code == 302 and building.progress.cancel.is_set()
    reopened = []
    monkeypatch.setattr(chart_page, "ensure_chart", lambda st: reopened.append(st.chart))
    client.post("/index/restart", data={"csrf_token": csrf})
    assert reopened == [building]  # still building (cancel not yet taken): not restarted
    building.progress.state = "cancelled"
    client.post("/index/restart", data={"csrf_token": csrf})
    assert reopened[-1] is None  # the cancelled chart is dropped and prepared again
