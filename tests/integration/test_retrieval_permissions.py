"""Acceptance: a role without PSY access never sees the PSY-labelled note, on the real stack.

pat-onc-01 has one psychiatry note (doc-onc-01-014, labelled PSY and R). The
oncologist prac-onc-1 launches as role ``clinician``: the chart shows the
denied count, and neither search (there is no search route: through the
chart the session holds, as the agent's tools use it) nor the draft cite it.
The psychiatrist prac-psych-1 (``behavioral-health``) is the control: for
them the same note is indexed and found, so the absence above is the policy's
doing, not a missing note.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import csrf_of, launch, wait_index

pytestmark = pytest.mark.integration
PATIENT = "pat-onc-01"
PSY_NOTE = "doc-onc-01-014"
PSY_WORDS = ("sertraline", "anhedonia", "psychotherapy", "Major depressive")  # only in that note
QUERIES = ("depression low mood psychiatry consultation", "sertraline anhedonia insomnia",
           "psychotherapy safety plan", "mental status exam")


def _charts(stack, user: str):  # type: ignore[no-untyped-def]
    web = stack.flask_app.extensions["smart_draft_web"]
    states = [s for s in list(web.sessions.values())
              if s.patient_id == PATIENT and (s.user_reference or "").endswith(user)
              and s.chart is not None and s.chart.progress.state == "ready"]
    assert states, "no indexed chart for this launch"
    return states


def _found(chart) -> set[str]:  # type: ignore[no-untyped-def]
    return {r.chunk.document_id for q in QUERIES for mode in ("dense", "sparse", "hybrid")
            for r in chart.search(q, k=20, mode=mode)}


def test_clinician_without_psy_access_sees_the_count_but_never_the_note(stack):
    http, resp = launch(stack, user="prac-onc-1", patient=PATIENT)
    assert resp.status_code == 200
    status = wait_index(stack, http)
    assert status["progress"]["state"] == "ready"
    denied = {k: v for k, v in status["counts"].items() if k.startswith("denied:")}
    assert sum(denied.values()) == 1, denied  # the PSY note (also R) and nothing else
    page = http.get(stack.app_url + "/", timeout=60).text
    assert 'id="denied"' in page and "confidentiality restricted: 1" in page
    assert PSY_NOTE not in page and not any(w in page for w in PSY_WORDS)

    for state in _charts(stack, "prac-onc-1"):
        assert state.role == "clinician"
        chart = state.chart
        assert PSY_NOTE not in chart.documents and PSY_NOTE not in chart.texts
        assert PSY_NOTE not in chart.index.document_ids
        found = _found(chart)
        assert found and PSY_NOTE not in found

    out = http.post(stack.app_url + "/api/drafts", json={"task": "summary"},
                    headers={"X-CSRF-Token": csrf_of(resp.text)}, timeout=300)
    assert out.status_code == 201, out.status_code
    body = out.json()
    cited = {c["document"] for s in body["draft"]["sentences"] for c in s["citations"]}
    assert cited and PSY_NOTE not in cited
    assert not any(w.lower() in body["draft"]["text"].lower() for w in PSY_WORDS)


def test_control_behavioral_health_role_does_see_the_note(stack):
    http, resp = launch(stack, user="prac-psych-1", patient=PATIENT)
    assert resp.status_code == 200
    status = wait_index(stack, http)
    assert status["progress"]["state"] == "ready"
    assert not any(k.startswith("denied:") for k in status["counts"])
    for state in _charts(stack, "prac-psych-1"):
        assert state.role == "behavioral-health"
        assert PSY_NOTE in state.chart.index.document_ids
        assert PSY_NOTE in _found(state.chart)
