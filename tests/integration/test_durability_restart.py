"""Restart the app between drafting and review: nothing is lost (SQLite and PostgreSQL).

The app process is replaced by a new one over the same database (new
Services, new web state, empty caches): the browser's session goes on, the
draft and its review page are there, the review works, the drafts list and
the admin ledger list the run.
"""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from app import create_app
from app.devstack import QuietHandler, start_stack
from tests.integration.conftest import csrf_of, launch, wait_index

pytestmark = pytest.mark.integration


def _restart(stack) -> None:  # type: ignore[no-untyped-def]
    """Stop the app server and start a fresh app on the same port and settings."""
    old = stack.flask_app
    port = stack.server.server_port
    stack.server.shutdown()
    stack.server.server_close()
    stack.thread.join(10)
    old.extensions["smart_draft_web"].join_workers()
    services = old.extensions["smart_draft"]
    services.engine.dispose()
    new = create_app(services.settings)
    new.extensions["smart_draft"]._embedder = services._embedder  # model weights: a cache, not state
    assert new.extensions["smart_draft_web"].sessions == {}
    server = make_server("127.0.0.1", port, new, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="app-server", daemon=True)
    thread.start()
    stack.server, stack.thread, stack.flask_app = server, thread, new


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_restart_between_drafting_and_review_loses_nothing(tmp_path, request, backend):  # type: ignore[no-untyped-def]
    overrides = {}
    if backend == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres").new_database()
    stack = start_stack(tmp_path, token_lifetime=600, app_overrides=overrides)
    try:
        assert stack.flask_app.extensions["smart_draft"].engine.dialect.name == backend
        http, resp = launch(stack, user="prac-onc-1", patient="pat-onc-01")
        assert resp.status_code == 200 and wait_index(stack, http)["progress"]["state"] == "ready"
        csrf = csrf_of(resp.text)
        drafted = http.post(stack.app_url + "/api/drafts", json={"task": "summary"},
                            headers={"X-CSRF-Token": csrf}, timeout=300)
        assert drafted.status_code == 201, drafted.text[:300]
        body = drafted.json()
        run_id, first = body["run"]["run_id"], body["draft"]["sentences"][0]["text"]

        _restart(stack)

        page = http.get(f"{stack.app_url}/drafts/{run_id}", timeout=60)  # the draft and its review form
        assert page.status_code == 200 and 'name="action"' in page.text
        assert first.split()[0] in page.text and "In the EHR as a preliminary" in page.text  # write-back state
        listing = http.get(stack.app_url + "/", timeout=120)  # the drafts list (the chart is reopened)
        assert listing.status_code == 200 and f"/drafts/{run_id}" in listing.text
        approved = http.post(f"{stack.app_url}/api/drafts/{run_id}/review",
                             json={"action": "approve", "ack_unsupported": True},
                             headers={"X-CSRF-Token": csrf}, timeout=60)
        assert approved.status_code == 200, approved.text[:300]
        assert "Approved: your decision is recorded" in http.get(f"{stack.app_url}/drafts/{run_id}", timeout=60).text
        admin, admin_page = launch(stack, user="prac-admin-1", patient="pat-onc-01")
        ledger = admin.get(stack.app_url + "/admin", timeout=60)
        assert ledger.status_code == 200 and f"<code>{run_id[:8]}</code>" in ledger.text
        assert 'id="override-rate"' in ledger.text and "approve: 1" in ledger.text
    finally:
        stack.stop()
