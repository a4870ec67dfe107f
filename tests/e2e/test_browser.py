"""The clinician's journey in a real browser, and the safety of the pages.

The full journey (sandbox launcher → chart → draft → each sentence against its source → approve,
final DocumentReference with its verifier Provenance) is in test_workspace.py.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from tests.e2e.conftest import axe_violations

pytestmark = pytest.mark.e2e


def fhir(stack, path, **params):
    resp = requests.get(f"{stack.sandbox.sekmet_base}/{path}", params=params or None,
                        headers={"Accept": "application/fhir+json", "Cache-Control": "no-cache"}, timeout=30)
    resp.raise_for_status()
    return resp.json()


def launch_from_ehr(page, stack, user="prac-onc-1", patient="pat-onc-01") -> float:
    """Use the sandbox EHR's launcher page like a person; returns seconds until the chart is usable."""
    page.goto(stack.sandbox.launcher_url)
    page.select_option("select[name=user]", user)
    page.select_option("select[name=patient]", patient)
    started = time.monotonic()
    page.get_by_role("button", name="Launch app").click()
    page.wait_for_url(re.compile(re.escape(stack.app_url) + r"/?$"))
    page.wait_for_selector("#progress-text:has-text('(ready)')", timeout=120_000)
    return time.monotonic() - started


def test_hostile_note_script_never_runs(page, stack):
    dialogs, errors, outbound = [], [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not
            (m.location or {}).get("url", "").endswith("/favicon.ico") else None)  # the sandbox EHR's icon
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: outbound.append(r.url) if "evil.example" in r.url else None)
    launch_from_ehr(page, stack, user="prac-gp-1", patient="pat-gen-02")
    page.select_option("#task", "question")
    page.fill("#question", "What NYHA class is the heart failure, and is it compensated on sacubitril-valsartan?")
    page.get_by_role("button", name="Draft").click()
    page.wait_for_url(re.compile(r"/drafts/[0-9a-f-]+$"), timeout=180_000)
    panel = page.locator(".src-panel", has=page.locator("h3", has_text="doc-gen-02-006"))
    if panel.count() == 0:  # the engine decides what it cites; this test is about showing the note safely
        pytest.skip("the drafting engine did not cite the hostile note doc-gen-02-006 for this question")
    page.locator(f"a.cite[data-panel='{panel.get_attribute('id')}']").first.click()
    note = panel.locator("pre.note")
    text = note.inner_text()
    assert "HFrEF, compensated" in text and "<script" not in note.inner_html()
    assert page.locator("pre.note script, pre.note img, pre.note iframe, pre.note svg").count() == 0
    page.wait_for_timeout(500)
    assert dialogs == [] and outbound == []
    assert errors == [], errors


def test_unknown_iss_shows_the_error_page(page, stack):
    page.goto(stack.app_url + "/launch?iss=https://evil.test/fhir&launch=abc")
    assert "not registered" in page.locator("main").inner_text()
    assert "What to do next" in page.locator("main").inner_text()
    assert axe_violations(page) == [], "error page"


def test_cancel_tells_the_truth_about_what_was_written(page, stack):
    """Cancel from the run page: if the page says cancelled, nothing reached the server; if it was
    too late, the page says so and exactly one draft was written."""
    launch_from_ehr(page, stack, patient="pat-onc-02")
    before = fhir(stack, "DocumentReference", patient="pat-onc-02", _summary="count")["total"]
    page.select_option("#task", "summary")
    page.get_by_role("button", name="Draft").click()
    page.wait_for_url(re.compile(r"/(runs|drafts)/"))
    if "/runs/" not in page.url or not page.locator("#cancel-run").count():
        pytest.skip("the run finished before the page could offer Cancel")
    page.locator("#cancel-run").click()
    page.wait_for_timeout(3000)  # the agent may still finish in the background; it must not change the answer
    page.wait_for_load_state()
    after = fhir(stack, "DocumentReference", patient="pat-onc-02", _summary="count")["total"]
    if "/drafts/" in page.url:  # too late: the page moved on to the written draft
        assert after == before + 1
    else:
        assert "Cancelled" in page.locator("#run-state").inner_text(timeout=10_000)
        assert after == before
