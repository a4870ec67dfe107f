"""The canary patient's name must never reach a log record, an error or the audit trail."""

from __future__ import annotations

import json
import logging

import pytest

from tests.integration.conftest import csrf_of, launch, wait_index

pytestmark = pytest.mark.integration
CANARY = ("Canarywhistle", "Zyxwend")


def test_canary_name_never_logged_or_audited(stack, caplog):
    caplog.set_level(logging.DEBUG)
    http, resp = launch(stack, patient="pat-canary")
    assert resp.status_code == 200
    assert "Canarywhistle" in resp.text  # the page itself may name the patient (banner)
    wait_index(stack, http)
    out = http.post(stack.app_url + "/api/drafts", json={"task": "summary"},
                    headers={"X-CSRF-Token": csrf_of(resp.text)}, timeout=300)
    assert out.status_code == 201
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
