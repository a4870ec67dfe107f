"""Override monitoring from persisted reviews, shadow inference, the model-release gate, and /admin."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from app import create_app
from app.errors import AppError
from app.monitoring.evaluation import DEFAULT_DATA, charts_for
from app.monitoring.governance import (
    classify_reviews,
    iso_week,
    override_figures,
    override_summary,
    record_release,
    release_status,
    shadow_summary,
)
from app.retrieval.embeddings import HashingEmbedder
from app.store.models import ReviewRecord
from app.web.state import LaunchState

CANARY = ("Zyxwend", "Canarywhistle", "pat-canary")
DEV = Path(__file__).resolve().parents[2] / "eval_corpora" / "irae" / "dev"
MONDAY = 1795392000.0  # 2026-11-23 00:00 UTC, ISO week 2026-W48


@pytest.fixture(scope="module")
def chart():
    return charts_for(DEFAULT_DATA, ["pat-canary"], HashingEmbedder())["pat-canary"]


def make_app(tmp_path, **extra):  # type: ignore[no-untyped-def]
    return create_app({"testing": True, "data_dir": tmp_path, **extra})


def test_overrides_are_rejects_and_large_edits_per_task_model_week():
    reviews = [
        {"action": "approve", "at": MONDAY, "task": "irae", "model": "m1"},
        {"action": "reject", "at": MONDAY + 60, "task": "irae", "model": "m1"},
        {"action": "edit", "edit_distance": 5, "draft_chars": 100, "at": MONDAY + 120, "task": "irae", "model": "m1"},
        {"action": "edit", "edit_distance": 50, "draft_chars": 100, "at": MONDAY + 180, "task": "irae",
         "model": "m1"},
        {"action": "edit", "edit_distance": 7, "draft_chars": None, "at": MONDAY + 7 * 86400, "task": None,
         "model": None},
        {"action": "bogus", "at": MONDAY},
    ]
    rows = classify_reviews(reviews, threshold=0.2)
    assert [r["override"] for r in rows] == [False, True, False, True, True]  # unsized edit counts
    f = override_figures(rows, window=3)
    assert iso_week(MONDAY) == "2026-W48"
    assert f["by_group"] == [
        {"task": "irae", "model": "m1", "week": "2026-W48", "reviews": 4, "overrides": 2, "override_rate": 0.5},
        {"task": "unknown", "model": "unknown", "week": "2026-W49", "reviews": 1, "overrides": 1,
         "override_rate": 1.0}]
    assert f["override_rate"] == pytest.approx(3 / 5) and f["edit_distances"] == [0.05, 0.5]
    assert f["edits_unsized"] == 1
    d = f["discordance"]  # the last three reviews: small edit, large edit, unsized edit
    assert d["window"] == 3 and d["discordant"] == 2 and 0 < d["ci95"][0] < d["rate"] < d["ci95"][1] < 1


def test_override_summary_reads_persisted_reviews_and_draft_lengths(tmp_path, chart):
    app = make_app(tmp_path, override_edit_threshold=0.1)
    s = app.extensions["smart_draft"]
    draft = s.drafting().draft(chart, "summary", backend_name="offline")
    s.drafts.save(None, draft)
    n = len(draft.text)
    with s.maker.begin() as db:
        db.add(ReviewRecord(document_id="d", run_id=draft.run_id, reviewer="r", action="edit",
                            edit_distance=max(1, n // 20), at=time.time()))  # 5 %: not an override
        db.add(ReviewRecord(document_id="d", run_id=draft.run_id, reviewer="r", action="edit",
                            edit_distance=n // 2, at=time.time()))  # 50 %: an override
    f = override_summary(s)
    assert f["reviews"] == 2 and f["override_rate"] == 0.5 and f["threshold"] == 0.1
    assert f["by_group"][0]["task"] == "summary" and f["by_group"][0]["model"] == draft.model


def test_shadow_runs_a_share_never_writes_and_records_the_comparison(tmp_path, chart):
    app = make_app(tmp_path, shadow_backend="offline", shadow_rate=1.0)
    s = app.extensions["smart_draft"]
    svc = s.drafting()
    draft = svc.draft(chart, "irae", backend_name="offline")
    assert svc.last_shadow is not None
    svc.last_shadow.join(60)
    summary = shadow_summary(s)
    assert summary["runs"] == 1
    g = summary["by_group"][0]
    assert g["task"] == "irae" and g["backend"] == "offline" and g["disagreement"] == 0.0 and g["failed"] == 0
    assert summary["recent"][0]["run_id"] == draft.run_id
    assert [r["run_id"] for r in s.drafts.runs()] == [draft.run_id]  # the shadow is no run of the app
    assert s.drafts.get(draft.run_id) is None and s.outbox.all() == []  # nothing saved, nothing queued
    off = make_app(tmp_path / "off", shadow_backend="offline", shadow_rate=0.0)
    svc_off = off.extensions["smart_draft"].drafting()
    svc_off.draft(chart, "irae", backend_name="offline")
    assert svc_off.last_shadow is None


def test_release_gate_refuse_until_a_passing_gold_run_is_recorded(tmp_path, chart):
    app = make_app(tmp_path, model_release_gate="refuse")
    s = app.extensions["smart_draft"]
    with pytest.raises(AppError) as err:
        s.drafting().draft(chart, "irae", backend_name="offline")
    assert err.value.code == "model_not_released" and err.value.http_status == 503
    assert s.drafts.runs() == []  # refused before it ran
    record_release(s.maker, backend="offline", model="offline-extractive-1", passed=False, f1=0.5,
                   precision=0.5, corpus="dev")
    with pytest.raises(AppError):
        s.drafting().draft(chart, "irae", backend_name="offline")
    record_release(s.maker, backend="offline", model="offline-extractive-1", passed=True, f1=1.0,
                   precision=1.0, corpus="dev")
    assert s.drafting().draft(chart, "irae", backend_name="offline").status == "completed"


def test_release_gate_warn_serves_and_logs_once(tmp_path, chart, caplog):
    app = make_app(tmp_path, model_release_gate="warn")
    s = app.extensions["smart_draft"]
    from app.monitoring import governance

    governance._WARNED.clear()
    with caplog.at_level("INFO", logger="app.monitoring.governance"):
        for _ in range(2):
            assert s.drafting().draft(chart, "irae", backend_name="offline").status == "completed"
    assert sum("model_release.unverified" in r.getMessage() for r in caplog.records) == 1
    off = make_app(tmp_path / "off", model_release_gate="off")
    assert off.extensions["smart_draft"].drafting().draft(chart, "irae", backend_name="offline")


def test_eval_record_records_a_passing_gold_run(tmp_path, monkeypatch):
    corpus = tmp_path / "gold"
    (corpus / "bundles").mkdir(parents=True)
    (corpus / "gold").mkdir()
    keep = ["irae-dev-01", "irae-dev-02"]
    for p in keep:
        shutil.copy(DEV / "bundles" / f"{p}.json", corpus / "bundles")
    gold = [g for g in json.loads((DEV / "gold" / "irae.json").read_text()) if g["patient"] in keep]
    (corpus / "gold" / "irae.json").write_text(json.dumps(gold))
    data = tmp_path / "data"
    env = {"APP_DATA_DIR": str(data), "APP_TESTING": "true", "APP_DATABASE_URL": ""}
    result = CliRunner().invoke(__import__("app.cli", fromlist=["main"]).main,
                                ["eval", "--task", "irae", "--data", str(corpus), "--record", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["recorded"] == {"backend": "offline", "model": "offline-extractive-1",
                                                     "passed": True}
    app = make_app(data, model_release_gate="refuse")
    s = app.extensions["smart_draft"]
    assert release_status(s.maker, "offline", "offline-extractive-1")["passed"] is True


def test_admin_shows_overrides_shadow_and_release_with_plots(tmp_path, chart):
    app = make_app(tmp_path, shadow_backend="offline", shadow_rate=1.0)
    s = app.extensions["smart_draft"]
    svc = s.drafting()
    draft = svc.draft(chart, "irae", backend_name="offline")
    svc.last_shadow.join(60)
    s.drafts.save(None, draft)
    with s.maker.begin() as db:
        db.add(ReviewRecord(document_id="d", run_id=draft.run_id, reviewer="r", action="reject", at=time.time()))
        db.add(ReviewRecord(document_id="d", run_id=draft.run_id, reviewer="r", action="edit", edit_distance=3,
                            at=time.time()))
    client = app.test_client()
    app.extensions["smart_draft_web"].put(LaunchState(
        sid="a1", fhir_base="https://ehr.test/fhir", config=None, patient_id="p1", user_reference=None,
        role="admin", unauthenticated=True))
    with client.session_transaction() as sess:
        sess["sid"] = "a1"
    html = client.get("/admin").get_data(as_text=True)
    assert "Override monitoring" in html and "Shadow inference" in html and "Model release gate" in html
    assert html.count('src="data:image/svg+xml;base64,') == 3  # override weeks, edit distances, shadow
    assert 'class="override-row"' in html and 'class="shadow-row"' in html
    assert "no gold run recorded" in html
    assert "<script>" not in html and "style=" not in html
    assert not any(c in html for c in CANARY)


def test_every_alert_runbook_has_its_section_in_governance_md():
    import yaml

    root = Path(__file__).resolve().parents[2]
    rules = yaml.safe_load((root / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    doc = (root / "docs" / "governance.md").read_text()
    anchors = [r["annotations"]["runbook"].split("#", 1)[1] for r in rules]
    assert len(anchors) == 8
    for anchor in anchors:
        assert f"\n### {anchor}\n" in doc, anchor
