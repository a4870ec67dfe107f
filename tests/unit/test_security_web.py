"""Strict JSON bodies (issue 11, findings 4 and 7) and a fuzz test over every JSON route's body.

Finding 7: ``/api/drafts`` with ``question`` as an int, list or dict was a 500; a review
``{"action":"edit","text":["a"]}`` wrote the literal ``['a']`` into the EHR. Finding 4: the
review ``version`` went into a FHIR URL unvalidated. Every JSON route now parses its body with
a strict pydantic model: a 400 naming the field, never a 500, never a coerced value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from app.retrieval.bundles import BundleClient
from app.retrieval.embeddings import HashingEmbedder
from app.retrieval.indexer import load_chart
from app.retrieval.policy import RolePolicy
from app.smart.scopes import Grants
from app.web.state import LaunchState

BUNDLE = Path(__file__).resolve().parents[2] / "synthetic_data" / "bundles" / "pat-gen-05.json"
_APP: dict = {}


def _chart():  # type: ignore[no-untyped-def]
    resources = [e["resource"] for e in json.loads(BUNDLE.read_text())["entry"]]
    return load_chart(BundleClient(resources), "pat-gen-05", grants=Grants.parse("patient/*.read"),
                      role="clinician", policy=RolePolicy.default(), embedder=HashingEmbedder())


def signed_in(tmp_path):  # type: ignore[no-untyped-def]
    """An app with one signed-in browser on an indexed chart, and one draft (not written)."""
    app = create_app({"testing": True, "data_dir": tmp_path, "allowed_iss": "https://ehr.test/fhir"})
    client = app.test_client()
    app.extensions["smart_draft_web"].put(LaunchState(
        sid="s1", fhir_base="https://ehr.test/fhir", config=None, patient_id="pat-gen-05",
        user_reference=None, role="clinician", unauthenticated=True, chart=_chart()))
    with client.session_transaction() as sess:
        sess["sid"] = "s1"
    page = client.get("/")
    csrf = page.get_data(as_text=True).split('name="csrf-token" content="')[1].split('"')[0]
    headers = {"X-CSRF-Token": csrf}
    made = client.post("/api/drafts", json={"task": "summary", "write": False}, headers=headers)
    assert made.status_code == 201, made.get_json()
    return client, headers, made.get_json()["run"]["run_id"]


@pytest.fixture
def web(tmp_path):  # type: ignore[no-untyped-def]
    return signed_in(tmp_path)


@pytest.mark.parametrize("question", [5, ["a"], {"q": "x"}, True, 1.5])
def test_a_question_of_the_wrong_type_is_a_400_naming_it(web, question) -> None:  # type: ignore[no-untyped-def]
    client, headers, _ = web
    resp = client.post("/api/drafts", json={"task": "question", "question": question}, headers=headers)
    assert resp.status_code == 400
    err = resp.get_json()["error"]
    assert err["code"] == "invalid_body" and "'question'" in err["message"]


@pytest.mark.parametrize("body,field", [
    ({"task": 1}, "task"), ({"task": "summary", "write": "yes"}, "write"),
    ({"task": "summary", "write": 1}, "write"), ({}, "task"),
])
def test_draft_bodies_are_not_coerced(web, body, field) -> None:  # type: ignore[no-untyped-def]
    client, headers, _ = web
    resp = client.post("/api/drafts", json=body, headers=headers)
    assert resp.status_code == 400 and f"'{field}'" in resp.get_json()["error"]["message"]


def test_unknown_fields_are_refused_without_echoing_them(web) -> None:  # type: ignore[no-untyped-def]
    client, headers, _ = web
    resp = client.post("/api/drafts", json={"task": "summary", "John Smith": 1}, headers=headers)
    assert resp.status_code == 400 and "John Smith" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("body,field", [
    ({"action": "edit", "text": ["a"]}, "text"),
    ({"action": "edit", "text": {"a": 1}}, "text"),
    ({"action": "edit", "text": "p", "version": "../../../DocumentReference/doc-gen-06-004"},
     "version"),
    ({"action": "edit", "text": "p", "version": 2}, "version"),
    ({"action": "approve", "ack_unsupported": "true"}, "ack_unsupported"),
    ({"action": ["approve"]}, "action"), ({"action": "delete"}, "action"),
    ({"action": "reject", "reason": 3}, "reason"),
])
def test_review_bodies_are_strict(web, body, field) -> None:  # type: ignore[no-untyped-def]
    client, headers, run_id = web
    resp = client.post(f"/api/drafts/{run_id}/review", json=body, headers=headers)
    assert resp.status_code == 400, resp.get_json()
    err = resp.get_json()["error"]
    assert err["code"] == "invalid_body" and f"'{field}'" in err["message"]
    assert "doc-gen-06-004" not in err["message"]


def test_a_valid_review_of_an_unwritten_draft_is_a_clear_409(web) -> None:  # type: ignore[no-untyped-def]
    client, headers, run_id = web
    resp = client.post(f"/api/drafts/{run_id}/review", json={"action": "edit", "text": "p"},
                       headers=headers)
    assert resp.status_code == 409 and resp.get_json()["error"]["code"] == "not_written"


# -- fuzz: every JSON route's body, never a 500 --------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.text(max_size=8), inner, max_size=3), max_leaves=8)
FIELDS = {"/api/drafts": ["task", "question", "write"],
          "review": ["action", "version", "text", "reason", "ack_unsupported"]}
VALUES = {"task": ["summary", "question", "irae", "nope", ""], "action": ["approve", "edit", "reject"],
          "reason": ["inaccurate", "other", "free text"], "version": ["1", "../x", "2"]}


@st.composite
def bodies(draw: st.DrawFn, route: str):  # type: ignore[no-untyped-def]
    if draw(st.booleans()):
        return draw(JSON)  # anything at all, even not an object
    out = {}
    for name in draw(st.lists(st.sampled_from(FIELDS[route]), unique=True)):
        out[name] = draw(st.sampled_from(VALUES[name]) if name in VALUES and draw(st.booleans())
                         else JSON)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(["/api/drafts", "review"]), data=st.data())
def test_fuzz_every_json_route_body_never_500(tmp_path_factory, route, data) -> None:  # type: ignore[no-untyped-def]
    if "web" not in _APP:
        _APP["web"] = signed_in(tmp_path_factory.mktemp("fuzz"))
    client, headers, run_id = _APP["web"]
    body = data.draw(bodies(route))
    url = "/api/drafts" if route == "/api/drafts" else f"/api/drafts/{run_id}/review"
    if data.draw(st.booleans()):
        resp = client.post(url, json=body, headers=headers)
    else:  # not JSON at all, or a wrong content type
        resp = client.post(url, data=json.dumps(body)[:-1] or "x", headers=headers,
                           content_type=data.draw(st.sampled_from(["application/json", "text/plain"])))
    assert resp.status_code < 500, (resp.status_code, resp.get_data(as_text=True)[:300])
    if resp.status_code >= 400:
        assert resp.get_json()["error"]["code"]  # a stable code, never a bare crash page


def test_oversized_edits_are_a_413_before_any_work(web) -> None:  # type: ignore[no-untyped-def]
    from app.review.workflow import MAX_EDIT_CHARS

    client, headers, run_id = web
    over = client.post(f"/api/drafts/{run_id}/review", headers=headers,
                       json={"action": "edit", "text": "x" * (MAX_EDIT_CHARS + 1)})
    assert over.status_code == 413 and over.get_json()["error"]["code"] == "edit_too_large"
    huge = client.post(f"/api/drafts/{run_id}/review", headers=headers,
                       json={"action": "edit", "text": "x" * 1_000_000})
    assert huge.status_code == 413 and huge.get_json()["error"]["code"] == "request_too_large"
    form = client.post(f"/drafts/{run_id}/review", headers=headers,
                       data={"action": "edit", "text": "x" * (MAX_EDIT_CHARS + 1)})
    assert form.status_code == 413
