"""Batch pieces without a server: cohorts, work items under the policy, the screen, engines,
checkpoints and the report (synthetic bundles from synthetic_data/)."""

from __future__ import annotations

import json

import pytest

from app.batch.cohort import CohortError, file_ids, parse_cohort
from app.batch.engines.local import LocalEngine
from app.batch.pipeline import SpoolClient, build_item
from app.batch.report import write_reports
from app.batch.screen import Screener, open_result
from app.batch.store import Checkpoints, Spool
from app.retrieval.bundles import BundleClient
from app.retrieval.policy import RolePolicy
from app.smart.scopes import Grants
from app.store.models import Vault
from tests.unit.test_agent_fixtures import _bundle, manifest

SECRET = b"unit-batch-secret-0123456789abcdef"
GRANTS = Grants.parse("system/Patient.rs system/Condition.rs system/DocumentReference.rs system/Binary.r")
PATIENTS = ("pat-onc-01", "pat-onc-02", "pat-onc-03", "pat-gen-01")


def item_for(pid: str, role: str = "clinician") -> dict:
    resources = list(_bundle(pid))
    mine = [r for r in resources if r["resourceType"] in ("Patient", "Condition", "DocumentReference")]
    return build_item(SpoolClient(pid, mine), BundleClient(r for r in resources if r["resourceType"] == "Binary"),
                      pid, f"key-{pid}", grants=GRANTS, role=role, policy=RolePolicy.default())


def work_file(tmp_path, pids=PATIENTS):
    vault = Vault(SECRET)
    path = tmp_path / "work.ndjson"
    with path.open("w") as fh:
        for pid in pids:
            fh.write(vault.seal(json.dumps(item_for(pid))) + "\n")
    return path


def test_cohort_forms_and_bad_input(tmp_path):
    assert parse_cohort("Group/ici-2026").group_id == "ici-2026"
    c = parse_cohort("Condition?code=http://snomed.info/sct|363346000&clinical-status=active")
    assert c.kind == "search" and c.resource_type == "Condition" and dict(c.params)["clinical-status"] == "active"
    assert c.label == "Condition?code&clinical-status"  # no values in labels
    ids = tmp_path / "ids.txt"
    ids.write_text("Patient/a1\n# note\n\na2  # trailing\na1\n")
    assert list(file_ids(parse_cohort(str(ids)).path)) == ["a1", "a2"]
    ids.write_text("a1\nDROP TABLE;\n")
    with pytest.raises(CohortError) as err:
        list(file_ids(ids))
    assert "line 2" in str(err.value) and "DROP" not in str(err.value)
    for bad in ("Group/../x", "nonsense", "Condition?"):
        with pytest.raises(CohortError):
            parse_cohort(bad)


def test_work_item_applies_the_role_policy_to_every_resource():
    labelled = set(manifest()["labelled"]["PSY"])
    item = item_for("pat-onc-01")
    ids = {d["meta"]["id"] for d in item["documents"]}
    assert ids and not ids & labelled  # the psychiatric notes never reach the screen
    assert any(k.startswith("denied:") for k in item["counts"])
    nobody = item_for("pat-onc-01", role="default")  # an unknown role reads nothing, not even the Patient
    assert nobody["documents"] == [] and nobody["patient"] is None and nobody["conditions"] == []


def test_unknown_labels_fail_closed_in_a_batch():
    resources = list(_bundle("pat-onc-02"))
    docs = [r for r in resources if r["resourceType"] == "DocumentReference"]
    docs[0] = {**docs[0], "meta": {**docs[0].get("meta", {}), "security": [{"system": "urn:x", "code": "Q"}]}}
    mine = [r for r in resources if r["resourceType"] in ("Patient", "Condition")] + docs
    item = build_item(SpoolClient("pat-onc-02", mine), BundleClient(resources), "pat-onc-02", "k", grants=GRANTS,
                      role="clinician", policy=RolePolicy.default())
    assert docs[0]["id"] not in {d["meta"]["id"] for d in item["documents"]}
    assert item["counts"].get("denied:unknown_label", 0) >= 1


def test_screen_in_processes_equals_screen_inline(tmp_path):
    path = work_file(tmp_path)
    vault = Vault(SECRET)
    inline = {k: s for k, s, _d, _c in (open_result(vault, r) for r in
                                        LocalEngine(secret=SECRET, task="irae", backend="offline", role_policy=None,
                                                    workers=0).run(path, total=len(PATIENTS)))}
    pooled = {k: s for k, s, _d, _c in (open_result(vault, r) for r in
                                        LocalEngine(secret=SECRET, task="irae", backend="offline", role_policy=None,
                                                    workers=2).run(path, total=len(PATIENTS)))}
    assert inline == pooled and set(inline) == {f"key-{p}" for p in PATIENTS}
    assert inline["key-pat-onc-01"]["irae_detected"] is True and inline["key-pat-onc-01"]["events"]
    assert all(s["status"] == "completed" for s in inline.values())


def test_the_screen_needs_no_embedding_and_cites_verified_spans():
    screener = Screener(SECRET)
    result = screener.screen_item(item_for("pat-onc-01"))
    _key, _summary, draft, write_chart = open_result(Vault(SECRET), Vault(SECRET).seal(json.dumps(result)))
    assert draft.findings["irae_detected"] and draft.unsupported == 0
    assert all(c.document in write_chart.documents for s in draft.sentences for c in s.citations)
    assert write_chart.patient_id == "pat-onc-01" and not hasattr(write_chart, "texts")


def test_spool_dedupes_and_groups_by_patient(tmp_path):
    spool = Spool(tmp_path / "s" / "spool.sqlite", Vault(SECRET))
    doc = {"resourceType": "DocumentReference", "id": "d1", "subject": {"reference": "Patient/p1"}}
    for res in ({"resourceType": "Patient", "id": "p1"}, doc, doc, {"resourceType": "Patient", "id": "p2"},
                {"resourceType": "Condition", "id": "c9"}):
        spool.add(res)
    spool.commit()
    assert list(spool.patients()) == ["p1", "p2"] and len(spool.resources("p1")) == 2 and spool.unassigned == 1
    raw = (tmp_path / "s" / "spool.sqlite").read_bytes()
    assert b"DocumentReference" in raw and b"Patient/p1" not in raw  # bodies encrypted at rest
    assert oct((tmp_path / "s").stat().st_mode & 0o777) == "0o700"
    spool.remove()


def test_checkpoints_count_screens_and_writes(tmp_path):
    cp = Checkpoints(tmp_path / "cp.sqlite", Vault(SECRET))
    assert cp.batch("b1") == {"phase": "fetch", "status_url": None}
    cp.set_batch("b1", status_url="https://x/status/1")
    assert cp.batch("b1")["status_url"] == "https://x/status/1"
    cp.screened("b1", "k1", "r1", {"status": "completed", "irae_detected": True}, "sealed")
    assert list(cp.pending_writes("b1")) == [("k1", "r1", "sealed")]
    cp.done("b1", "k1", "written", wrote=True)
    assert list(cp.pending_writes("b1")) == [] and cp.finished("b1") == {"k1"}
    row = cp.rows("b1")[0]
    assert (row["screens"], row["writes"], row["draft_state"]) == (1, 1, "written")


def test_report_counts_per_organ_and_grade_without_patient_ids(tmp_path):
    rows = [{"patient_key": "a" * 24, "status": "completed", "irae_detected": True, "notes": 5, "screens": 1,
             "writes": 1, "draft_state": "written",
             "events": [{"organ": "gastrointestinal", "term": "colitis", "grade": 2},
                        {"organ": "hepatic", "term": "hepatitis", "grade": None}]},
            {"patient_key": "b" * 24, "status": "completed", "irae_detected": False, "notes": 3, "screens": 1,
             "writes": 0, "draft_state": "no_findings", "events": []}]
    out = write_reports(tmp_path, "b1", rows, {"batch_id": "b1", "cohort": "Group/x", "engine": "local",
                                               "backend": "offline", "source": "bulk", "problems": {}})
    t = out["totals"]
    assert t["organ_grade"] == {"gastrointestinal": {"2": 1}, "hepatic": {"unknown": 1}}
    assert t["with_findings"] == 1 and t["drafts_written"] == 1 and t["notes"] == 8
    html = (tmp_path / "report.html").read_text()
    assert "gastrointestinal" in html and "<script" not in html
    csv_text = (tmp_path / "report.csv").read_text()
    assert "gastrointestinal:colitis:G2" in csv_text and "patient_key" in csv_text
