"""The clinician's journey in a real browser, and the safety of the pages.

sandbox launcher → EHR launch → chart → irAE screen → a citation's source → approve →
the DocumentReference on the FHIR server is final with its verifier Provenance.
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


def test_journey_irae_screen_evidence_and_approval(page, stack, artifacts):
    elapsed = launch_from_ehr(page, stack)
    assert page.locator("section.banner h1").inner_text().strip()  # need_patient_banner: the banner shows
    assert "Write-back" in page.content() and page.locator("#writeback-state").inner_text().startswith("Enabled")
    page.screenshot(path=str(artifacts / "chart.png"), full_page=True)
    assert axe_violations(page) == [], "chart page"
    (artifacts / "launch_to_chart_seconds.txt").write_text(f"{elapsed:.2f}\n")

    page.select_option("#task", "irae")
    page.get_by_role("button", name="Draft").click()
    page.wait_for_url(re.compile(r"/drafts/[0-9a-f-]+$"), timeout=180_000)
    assert page.locator("h1").inner_text().startswith("Draft: irae")
    rows = page.locator("table tbody tr")
    assert rows.count() >= 1 and "colitis" in page.locator("table").inner_text().lower()
    page.screenshot(path=str(artifacts / "draft.png"), full_page=True)
    assert axe_violations(page) == [], "draft and review page"

    draft_url = page.url
    first = page.locator("ol.sentences a.cite").first
    first.click()
    page.wait_for_url(re.compile(r"/source/"))
    cited = page.locator("mark#cited").inner_text()
    assert len(cited.strip()) >= 8
    assert axe_violations(page) == [], "source page"

    page.goto(draft_url)
    if page.locator("#ack").count():
        page.locator("#ack").check()
    page.locator("#approve").click()
    page.wait_for_selector("#review-result")
    assert "approve recorded" in page.locator("#review-result").inner_text()
    written = re.search(r"DocumentReference/([A-Za-z0-9\-.]+)", page.locator("#writeback-result").inner_text())
    assert written
    doc = fhir(stack, f"DocumentReference/{written.group(1)}")
    assert doc["docStatus"] == "final" and doc["authenticator"]["reference"] == "Practitioner/prac-onc-1"
    provs = fhir(stack, "Provenance", target=f"DocumentReference/{doc['id']}").get("entry", [])
    verifiers = [a for e in provs for a in e["resource"]["agent"]
                 if any(c.get("code") == "verifier" for c in (a.get("type") or {}).get("coding", []))]
    assert verifiers and verifiers[0]["who"]["reference"] == "Practitioner/prac-onc-1"


def test_hostile_note_script_never_runs(page, stack):
    dialogs, errors, outbound = [], [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: outbound.append(r.url) if "evil.example" in r.url else None)
    launch_from_ehr(page, stack, user="prac-gp-1", patient="pat-gen-02")
    page.select_option("#task", "question")
    page.fill("#question", "Is the heart failure with reduced ejection fraction compensated?")
    page.get_by_role("button", name="Draft").click()
    page.wait_for_url(re.compile(r"/drafts/[0-9a-f-]+$"), timeout=180_000)
    links = [a.get_attribute("href") for a in page.locator("a.cite").all()]
    hostile = [h for h in links if "doc-gen-02-006" in h]
    assert hostile, "the hostile HTML note should be cited for this question"
    page.goto(stack.app_url + hostile[0])
    text = page.locator("pre.note").inner_text()
    assert "HFrEF, compensated" in text and "<script" not in page.locator("pre.note").inner_html()
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
