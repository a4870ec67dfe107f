"""With DocumentReference.c withheld by the EHR, drafting works and write-back is off, visibly."""

from __future__ import annotations

import pytest
import requests

from app.devstack import start_stack
from tests.integration.conftest import csrf_of, launch, wait_index

pytestmark = pytest.mark.integration

READ_ONLY = ("launch launch/patient openid fhirUser online_access patient/*.rs user/*.rs "
             "user/Provenance.c")


@pytest.fixture(scope="module")
def narrow_stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("narrow"), client_scopes=READ_ONLY)
    yield s
    s.stop()


def test_writeback_disabled_and_said_so(narrow_stack):
    before = requests.get(f"{narrow_stack.sandbox.sekmet_base}/DocumentReference",
                          params={"patient": "pat-onc-01", "_count": 500, "_summary": "count"},
                          headers={"Accept": "application/fhir+json"}, timeout=30).json().get("total")
    http, resp = launch(narrow_stack)
    assert resp.status_code == 200
    assert "Write-back is disabled" in resp.text and "DocumentReference" in resp.text
    wait_index(narrow_stack, http)
    out = http.post(narrow_stack.app_url + "/api/drafts", json={"task": "summary"},
                    headers={"X-CSRF-Token": csrf_of(resp.text)}, timeout=300)
    assert out.status_code == 201
    body = out.json()
    assert body["status"] == "completed" and body["draft"]["sentences"]
    assert body["writeback"]["state"] == "disabled" and body["written"] is None
    after = requests.get(f"{narrow_stack.sandbox.sekmet_base}/DocumentReference",
                         params={"patient": "pat-onc-01", "_count": 500, "_summary": "count"},
                         headers={"Accept": "application/fhir+json"}, timeout=30).json().get("total")
    assert before == after
