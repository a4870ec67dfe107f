"""The canary patient's name must never reach a log record, an error or the audit trail."""

from __future__ import annotations

import json
import logging

import pytest

from tests.integration.conftest import csrf_of, launch

pytestmark = pytest.mark.integration
CANARY = ("Canarywhistle", "Zyxwend")


def test_canary_name_never_logged_or_audited(stack, caplog):
    """The demo path (launch, index, draft, write, read back) for the canary patient."""
    from app.demo import drive, read_back

    caplog.set_level(logging.DEBUG)
    printed: list[str] = []
    http, resp = launch(stack, patient="pat-canary")
    assert resp.status_code == 200
    assert "Canarywhistle" in resp.text  # the page itself may name the patient (banner)
    report = drive(stack, user="prac-onc-1", patient="pat-canary", task="summary", out=printed.append)
    read_back(stack, report["draft"]["written"], printed.append)
    assert printed and not any(name in line for line in printed for name in CANARY)
    # an error path too: a bad request and a missing page
    http.post(stack.app_url + "/api/drafts", json={"task": "nope"}, headers={"X-CSRF-Token": csrf_of(resp.text)})
    http.get(stack.app_url + "/drafts/nope")
    logged = "\n".join(r.getMessage() + " " + json.dumps(r.args, default=str) for r in caplog.records)
    assert caplog.records, "no log records captured"
    for name in CANARY:
        assert name not in logged
    services = stack.flask_app.extensions["smart_draft"]
    trail = json.dumps(services.audit.entries())
    assert "pat-canary" in trail  # the trail does record the patient reference ...
    for name in CANARY:
        assert name not in trail  # ... but never the name
    # the app database holds no plain text of the name (drafts and outbox are encrypted)
    db = (services.settings.data_dir / "app.db").read_bytes()
    for name in CANARY:
        assert name.encode() not in db
