"""Labelled Conditions through every role on the real stack (issue 11, finding 1; acceptance 4).

pat-gen-06's "Major depressive disorder" Condition is PSY + R, pat-gen-04's "Alcohol use
disorder" is 42CFRPart2 + R (their notes' labels). A GP, a nurse and the admin never see
them on the chart page or in a draft; the psychiatrist does, and the draft written for them
carries R and PSY (plus AIAST) on the EHR.
"""

from __future__ import annotations

import pytest
import requests

from app.writeback.builders import IDENTIFIER_SYSTEM
from tests.integration.conftest import csrf_of, launch, wait_index

pytestmark = pytest.mark.integration
H = {"Accept": "application/fhir+json"}
DEPRESSION, ALCOHOL = "Major depressive disorder", "Alcohol use disorder"


def _open(stack, user: str, patient: str):  # type: ignore[no-untyped-def]
    http, resp = launch(stack, user=user, patient=patient)
    assert resp.status_code == 200, resp.text[:300]
    assert wait_index(stack, http)["progress"]["state"] == "ready"
    return http, resp, csrf_of(resp.text)


def _summary(stack, http, csrf: str, *, write: bool) -> dict:  # type: ignore[no-untyped-def]
    out = http.post(stack.app_url + "/api/drafts", json={"task": "summary", "write": write},
                    headers={"X-CSRF-Token": csrf}, timeout=300)
    assert out.status_code == 201, out.text[:300]
    return out.json()


@pytest.mark.parametrize("user", ["prac-gp-1", "prac-nurse-1", "prac-admin-1"])
def test_roles_without_access_never_see_the_labelled_problems(stack, user: str) -> None:  # type: ignore[no-untyped-def]
    for patient, problem in (("pat-gen-06", DEPRESSION), ("pat-gen-04", ALCOHOL)):
        http, resp, csrf = _open(stack, user, patient)
        assert problem not in resp.text
        body = _summary(stack, http, csrf, write=False)
        assert f"Problem list (active): {problem}" not in str(body)
        if user == "prac-admin-1":
            assert "Problem list" not in str(body)


def test_the_psychiatrist_sees_it_and_the_written_draft_carries_its_labels(stack) -> None:  # type: ignore[no-untyped-def]
    http, resp, csrf = _open(stack, "prac-psych-1", "pat-gen-06")
    assert DEPRESSION in resp.text
    body = _summary(stack, http, csrf, write=True)
    assert body["writeback"]["state"] == "written", body["writeback"]
    run_id = body["run"]["run_id"]
    bundle = requests.get(f"{stack.sandbox.sekmet_base}/DocumentReference", headers=H, timeout=30,
                          params={"identifier": f"{IDENTIFIER_SYSTEM}|{run_id}"}).json()
    [doc] = [e["resource"] for e in bundle["entry"]]
    codes = {c["code"] for c in doc["meta"]["security"]}
    assert {"AIAST", "R", "PSY"} <= codes, codes
    assert doc["securityLabel"][0]["coding"][0]["code"] == "R"
