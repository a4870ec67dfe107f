"""A draft made in a session that has ended can be reopened in a new session of the same patient
(issue 16's leftover: earlier sessions' drafts were listed but could not be opened), and only then:
never one of another patient, of a session still open, or citing notes the new session may not see."""

from __future__ import annotations

import html

import requests

from tests.integration.conftest import csrf_of, launch, wait_index

PATIENT = "pat-onc-01"


def _draft(stack, http, page) -> str:  # type: ignore[no-untyped-def]
    return _draft_body(stack, http, page)["run"]["run_id"]


def _draft_body(stack, http, page) -> dict:  # type: ignore[no-untyped-def]
    wait_index(stack, http)
    out = http.post(stack.app_url + "/api/drafts", json={"task": "summary", "write": False},
                    headers={"X-CSRF-Token": csrf_of(page.text)}, timeout=300)
    assert out.status_code == 201, out.text[:300]
    return out.json()


def _reopen(stack, http, page, run_id: str) -> requests.Response:  # type: ignore[no-untyped-def]
    return http.post(f"{stack.app_url}/drafts/{run_id}/reopen", data={"csrf_token": csrf_of(page.text)},
                     allow_redirects=False, timeout=120)


def _cited_types(stack, body: dict) -> set[str]:  # type: ignore[no-untyped-def]
    docs = {c["document"] for s in body["draft"]["sentences"] for c in s["citations"]}
    types = set()
    for doc in docs:
        res = requests.get(f"{stack.sandbox.sekmet_base}/DocumentReference/{doc}",
                           headers={"Accept": "application/fhir+json"}, timeout=30).json()
        types |= {c["code"] for c in res.get("type", {}).get("coding", [])}
    return types


def test_an_ended_sessions_draft_reopens_here_and_nowhere_else(stack) -> None:  # type: ignore[no-untyped-def]
    first, page1 = launch(stack, user="prac-onc-1", patient=PATIENT)
    body = _draft_body(stack, first, page1)
    run_id = body["run"]["run_id"]
    sentence = html.escape(body["draft"]["sentences"][0]["text"][:40], quote=False)
    assert first.get(f"{stack.app_url}/drafts/{run_id}", timeout=60).status_code == 200

    # another clinician's browser, while the first session is open: listed, not openable
    other, page_other = launch(stack, user="prac-gp-1", patient=PATIENT)
    chart = other.get(stack.app_url + "/", timeout=60).text
    assert f"/drafts/{run_id}/reopen" not in chart and "(open in another session)" in chart
    refused = _reopen(stack, other, page_other, run_id)
    assert refused.status_code == 409 and "draft_in_other_session" in refused.text
    assert other.get(f"{stack.app_url}/drafts/{run_id}", timeout=60).status_code == 404

    # the first browser launches again: its earlier session ends, the draft is offered to reopen
    page2 = first.get(stack.launch_link(user="prac-onc-1", patient=PATIENT), timeout=120)
    assert page2.status_code == 200
    assert first.get(f"{stack.app_url}/drafts/{run_id}", timeout=60).status_code == 404  # not yet
    assert f"/drafts/{run_id}/reopen" in page2.text
    bad_csrf = first.post(f"{stack.app_url}/drafts/{run_id}/reopen", data={"csrf_token": "x"},
                          allow_redirects=False, timeout=60)
    assert bad_csrf.status_code in (400, 403)
    opened = _reopen(stack, first, page2, run_id)
    assert opened.status_code == 302 and opened.headers["Location"].endswith(f"/drafts/{run_id}")
    shown = first.get(f"{stack.app_url}/drafts/{run_id}", timeout=60)
    assert shown.status_code == 200 and sentence in shown.text

    # now it belongs to the new, open session: the other clinician still cannot take it
    again = _reopen(stack, other, page_other, run_id)
    assert again.status_code == 409


def test_reopening_is_refused_for_another_patient_or_an_unknown_or_malformed_id(stack) -> None:  # type: ignore[no-untyped-def]
    first, page1 = launch(stack, user="prac-onc-1", patient=PATIENT)
    run_id = _draft(stack, first, page1)
    first.get(stack.launch_link(user="prac-onc-1", patient="pat-onc-02"), timeout=120)  # ends session 1
    elsewhere, page = launch(stack, user="prac-gp-1", patient="pat-onc-02")
    assert _reopen(stack, elsewhere, page, run_id).status_code == 404  # another patient's: not found
    assert _reopen(stack, elsewhere, page, "0" * 36).status_code == 404
    bad = _reopen(stack, elsewhere, page, "bad_id!")
    assert bad.status_code == 400 and "bad_id!" not in bad.text


def test_a_draft_citing_notes_this_role_may_not_see_is_not_reopened(stack) -> None:  # type: ignore[no-untyped-def]
    from app.retrieval.policy import RolePolicy

    first, page1 = launch(stack, user="prac-onc-1", patient=PATIENT)
    body = _draft_body(stack, first, page1)
    run_id = body["run"]["run_id"]
    nurse_types = set(RolePolicy.default().roles["nurse"].allowed_types)
    hidden = _cited_types(stack, body) - nurse_types
    assert hidden, "the oncologist's summary should cite a note type a nurse may not read"
    first.get(stack.launch_link(user="prac-onc-1", patient="pat-onc-02"), timeout=120)  # ends session 1
    nurse, page = launch(stack, user="prac-nurse-1", patient=PATIENT)
    refused = _reopen(stack, nurse, page, run_id)
    assert refused.status_code == 403 and "draft_not_permitted" in refused.text
    assert nurse.get(f"{stack.app_url}/drafts/{run_id}", timeout=60).status_code == 404
