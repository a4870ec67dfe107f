"""The clinician workspace (issue 16) in Debian Chromium: two-pane review without page loads,
the notes list, the patient's drafts across sessions, review actions, keyboard only, two sizes.

Screenshots go to ``test-artifacts/screenshots/`` (``TEST_ARTIFACTS_DIR`` moves them).
"""

from __future__ import annotations

import re

import pytest
import requests

from tests.e2e.conftest import axe_violations
from tests.e2e.test_browser import fhir, launch_from_ehr

pytestmark = pytest.mark.e2e
SIZES = {"1024x768": (1024, 768), "1440x900": (1440, 900)}


def shots(page, artifacts, name: str) -> None:  # type: ignore[no-untyped-def]
    folder = artifacts / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    for label, (w, h) in SIZES.items():
        page.set_viewport_size({"width": w, "height": h})
        page.screenshot(path=str(folder / f"{name}-{label}.png"))
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} is wider than {label} by {overflow}px"
    page.set_viewport_size({"width": 1024, "height": 768})


def watch_loads(page) -> list[str]:  # type: ignore[no-untyped-def]
    """Document requests of the main frame (a page load), and a marker a reload would lose."""
    loads: list[str] = []
    page.on("request", lambda r: loads.append(r.url) if r.resource_type == "document" else None)
    page.evaluate("() => { window.__noReload = 1; }")
    return loads


def draft(page, task: str) -> None:  # type: ignore[no-untyped-def]
    page.select_option("#task", task)
    page.get_by_role("button", name="Draft").click()
    page.wait_for_url(re.compile(r"/drafts/[0-9a-f-]+$"), timeout=180_000)


def in_view(page, selector: str) -> bool:  # type: ignore[no-untyped-def]
    return page.evaluate("""(sel) => { const el = document.querySelector(sel); if (!el) return false;
        const r = el.getBoundingClientRect(), p = el.closest('.pane-source').getBoundingClientRect();
        return r.height > 0 && r.bottom > Math.max(0, p.top) && r.top < Math.min(innerHeight, p.bottom); }""",
                         selector)


def test_journey_review_each_sentence_beside_its_source_then_approve(page, stack, artifacts):
    page.set_viewport_size({"width": 1024, "height": 768})
    launch_from_ehr(page, stack)
    page.reload()  # the list fills while the notes are prepared
    assert page.locator("#notes tbody tr").count() >= 2
    shots(page, artifacts, "chart")
    assert axe_violations(page) == [], "chart"

    # notes filter: server side (query string), works without JavaScript
    kinds = [o for o in page.locator("#f-type option").all_inner_texts() if o != "All types"]
    total = page.locator("#notes tbody tr").count()
    page.select_option("#f-type", kinds[0])
    page.locator("#filter-notes").click()
    page.wait_for_url(re.compile(r"type="))
    filtered = page.locator("#notes tbody tr td:nth-child(2)").all_inner_texts()
    assert filtered and set(filtered) == {kinds[0]} and (len(kinds) == 1 or len(filtered) < total)
    page.goto(stack.app_url + "/?from=2999-01-01")
    assert "No note matches" in page.locator("#notes").inner_text()
    page.goto(stack.app_url + "/")

    draft(page, "irae")
    assert page.locator("h1").inner_text() == "Immune-related adverse event screen"
    assert "irae" not in page.title().lower().split(" ")
    headers = page.locator("#irae-table thead th").all_inner_texts()
    assert headers[:7] == ["Organ", "Term", "Grade", "Grade basis", "Attribution", "Onset", "Evidence"]
    assert "colitis" in page.locator("#irae-table").inner_text().lower()
    assert not re.search(r"DocumentReference/|Device/|_history", page.locator("main").inner_text())
    shots(page, artifacts, "draft")
    assert axe_violations(page) == [], "draft and review"

    loads = watch_loads(page)
    cited = page.locator("#sentences .sentence:has(a.cite)")
    assert cited.count() >= 4, "a draft of at least four cited sentences to check"
    for i in range(cited.count()):
        sentence = cited.nth(i)
        for link in sentence.locator("a.cite").all():
            n, panel = link.get_attribute("data-cite"), link.get_attribute("data-panel")
            link.click()
            assert page.locator(f"#{panel}").is_visible()
            assert page.locator(".src-panel.shown").count() == 1
            assert page.locator(f"mark.k{n}.on").count() >= 1
            assert page.locator(f"#c{n}").count() == 1  # the no-JS fragment target exists
            assert in_view(page, f"mark.k{n}"), f"citation {n}'s passage is not scrolled into view"
            assert "current" in (sentence.get_attribute("class") or "")
        quote = page.locator("mark.cited.on").first.inner_text().strip()
        assert len(quote) >= 8
    page.locator("#sentences .sentence:has(a.cite) .s-text").first.click()  # choosing a sentence shows it too
    assert page.locator(".src-panel.shown").count() == 1
    assert loads == [] and page.evaluate("() => window.__noReload") == 1, "checking the draft loaded a page"
    page.screenshot(path=str(artifacts / "screenshots" / "draft-source-1024x768.png"))

    assert "final, signed by you" in page.locator("#approve-effect").inner_text()
    assert "entered in error" in page.locator("#reject-effect").inner_text()
    if page.locator("#ack").count():
        page.locator("#approve").click()  # the browser refuses: the acknowledgement is required
        assert "/drafts/" in page.url and page.locator("#approve").count() == 1
        page.locator("#ack").check()
    page.locator("#approve").click()
    page.wait_for_selector("#review-result")
    assert page.locator("#review-result").inner_text().startswith("Approved")
    assert "Approved by Practitioner/prac-onc-1" in page.locator("#review-history").inner_text()
    href = page.locator("#document-link").get_attribute("href")
    doc_id = re.search(r"/DocumentReference/([A-Za-z0-9\-.]+)$", href).group(1)
    doc = fhir(stack, f"DocumentReference/{doc_id}")
    assert doc["docStatus"] == "final" and doc["authenticator"]["reference"] == "Practitioner/prac-onc-1"
    provs = fhir(stack, "Provenance", target=f"DocumentReference/{doc['id']}").get("entry", [])
    verifiers = [a for e in provs for a in e["resource"]["agent"]
                 if any(c.get("code") == "verifier" for c in (a.get("type") or {}).get("coding", []))]
    assert verifiers and verifiers[0]["who"]["reference"] == "Practitioner/prac-onc-1"
    assert axe_violations(page) == [], "approved draft"

    page.goto(stack.app_url + "/")
    row = page.locator("#draft-history tbody tr", has_text="Immune-related adverse event screen").first
    assert "approved" in row.inner_text() and "prac-onc-1" in row.inner_text()
    shots(page, artifacts, "chart-after")


def test_keyboard_only_journey(page, stack, artifacts):
    """Tab, Enter, arrows and Space only: draft, check sentences against their sources, approve.
    In the sandbox's dark SMART style (its /smart-style.json?theme=dark served as the app's
    /ehr-style.css through the app's own converter): still no serious axe violation."""
    from app.web.style import style_css

    dark = requests.get(stack.sandbox.base_url + "/smart-style.json", params={"theme": "dark"}, timeout=10).json()
    page.route("**/ehr-style.css", lambda route: route.fulfill(status=200, content_type="text/css",
                                                               body=style_css(dark)))
    page.set_viewport_size({"width": 1024, "height": 768})
    launch_from_ehr(page, stack, patient="pat-onc-02")
    bg = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(22, 24, 29)", bg
    page.screenshot(path=str(artifacts / "screenshots" / "chart-dark-1024x768.png"))
    assert axe_violations(page) == [], "chart, dark style"

    def tab_to(selector: str, limit: int = 80) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to("#task")
    assert page.locator("#task").input_value() == "summary"
    tab_to("#draft-button")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/drafts/[0-9a-f-]+$"), timeout=180_000)
    assert axe_violations(page) == [], "draft, dark style"
    loads = watch_loads(page)
    tab_to("#sentences a.cite")
    page.keyboard.press("Enter")
    assert page.locator(".src-panel.shown").count() == 1
    first = page.locator("a.cite.current").first.get_attribute("data-cite")
    page.keyboard.press("ArrowDown")
    moved = page.locator(".sentence.current").get_attribute("data-sentence")
    assert moved and moved != "1" or page.locator("a.cite.current").first.get_attribute("data-cite") != first
    page.keyboard.press("ArrowUp")
    page.screenshot(path=str(artifacts / "screenshots" / "draft-dark-1024x768.png"))
    assert loads == [] and page.evaluate("() => window.__noReload") == 1
    if page.locator("#ack").count():
        tab_to("#ack")
        page.keyboard.press("Space")
    tab_to("#approve")
    page.keyboard.press("Enter")
    page.wait_for_selector("#review-result")
    assert page.locator("#review-result").inner_text().startswith("Approved")
    page.screenshot(path=str(artifacts / "screenshots" / "keyboard-approved-1024x768.png"))


def test_without_javascript_citations_open_by_fragment(browser, stack):
    """No JavaScript: :target shows the cited passage; the draft form works by plain form posts."""
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1024, "height": 768})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(stack.sandbox.launcher_url)
        page.select_option("select[name=user]", "prac-onc-1")
        page.select_option("select[name=patient]", "pat-onc-01")
        page.get_by_role("button", name="Launch app").click()
        page.wait_for_url(re.compile(re.escape(stack.app_url) + r"/?$"))
        page.select_option("#task", "irae")
        page.get_by_role("button", name="Draft").click()
        for _ in range(120):  # the run page: "Check again" until the draft is ready
            if re.search(r"/drafts/[0-9a-f-]+$", page.url):
                break
            page.wait_for_timeout(1000)
            page.get_by_role("link", name="Check again").click()
        assert page.locator(".src-panel:visible").count() == 0
        link = page.locator("#sentences a.cite").first
        n = link.get_attribute("data-cite")
        link.click()
        assert page.url.endswith(f"#c{n}")
        assert page.locator(".src-panel:visible").count() == 1
        assert page.locator(f"mark#c{n}").is_visible()
    finally:
        context.close()


def test_held_style_and_frame(stack):
    """The CSP keeps framing to the EHR origins and forbids inline code; the sandbox offers a dark style."""
    resp = requests.get(stack.app_url + "/signed-out", timeout=10)
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors" in csp and "'unsafe-inline'" not in csp
    dark = requests.get(stack.sandbox.base_url + "/smart-style.json", params={"theme": "dark"}, timeout=10).json()
    from app.web.style import style_css

    assert "--sda-bg: #" in style_css(dark) and dark["color_background"].lower() != "#f6f7f9"


def test_inside_the_ehr_frame(page, stack, artifacts):
    """Launched inside an iframe of the sandbox EHR's page (an allowed EHR origin): the chart and a
    draft work in a 1000×700 frame without horizontal scrolling."""
    page.set_viewport_size({"width": 1024, "height": 768})
    page.goto(stack.sandbox.launcher_url)
    page.evaluate("""(src) => { document.body.innerHTML = '';
        const f = document.createElement('iframe'); f.src = src; f.width = 1000; f.height = 700;
        f.title = 'SMART app'; document.body.appendChild(f); }""", stack.launch_link(patient="pat-onc-01"))
    frame = page.frame_locator("iframe")
    frame.locator("#progress-text:has-text('(ready)')").wait_for(timeout=120_000)
    app = next(f for f in page.frames if f.url.startswith(stack.app_url))
    assert app.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    frame.locator("#task").select_option("irae")
    frame.get_by_role("button", name="Draft").click()
    frame.locator("#review-grid").wait_for(timeout=180_000)
    frame.locator("#sentences a.cite").first.click()
    assert frame.locator(".src-panel.shown").count() == 1
    assert page.evaluate("() => window.scrollY") == 0, "choosing a citation scrolled the EHR's page"
    app = next(f for f in page.frames if f.url.startswith(stack.app_url))
    assert app.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    page.screenshot(path=str(artifacts / "screenshots" / "in-ehr-frame-1024x768.png"))
