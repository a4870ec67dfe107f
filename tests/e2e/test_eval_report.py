"""The eval report (`python -m app eval --report`) opened in headless Chromium: gates, tables and
plots (inline SVG) render from disk without JavaScript; screenshot in test-artifacts/."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from app.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT / "eval_corpora" / "irae" / "dev"
CANARY = "Canarywhistle"


def test_eval_report_opens_with_plots(tmp_path, browser, artifacts):
    report = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["eval", "--task", "irae", "--data", str(DEV), "--compare", "legacy",
                                       "--report", str(report), "--json"])
    assert result.exit_code == 0, result.output
    html = report.read_text(encoding="utf-8")
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    assert CANARY not in html
    figures = json.loads(result.stdout)["irae"]
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(report.as_uri())
        assert page.locator("h2", has_text="Gates").inner_text().endswith("PASS")
        svgs = page.locator("figure svg")
        assert svgs.count() >= 4  # headline, per organ, per trap, latency
        for i in range(svgs.count()):
            box = svgs.nth(i).bounding_box()
            assert svgs.nth(i).is_visible() and box and box["width"] > 100 and box["height"] > 100
        assert page.locator("h2", has_text="Comparison").is_visible()
        rows = page.locator("h2:has-text('Per patient') + table tbody tr")
        assert rows.count() == figures["counts"]["patients"]
        page.screenshot(path=str(artifacts / "eval-report.png"), full_page=True)
    finally:
        context.close()
    assert (artifacts / "eval-report.png").stat().st_size > 10_000
