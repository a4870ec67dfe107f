"""The batch end to end on the sandbox: Bulk Data $export (Group), paged search, and a re-run.

One sandbox for the module (sekmet + authorization server + the $export layer), a backend client
with its own key, SMART Backend Services tokens that expire every few seconds (so the export has
to re-authorise), the real pipeline in-process with the local engine.
"""

from __future__ import annotations

import json
import os

import pytest
import requests

from app.batch import BatchOptions
from app.batch.pipeline import Connection, run_batch
from app.config import load_settings
from app.services import Services
from app.smart.backend import ClientKey

pytestmark = pytest.mark.integration
CLIENT = "batch-backend"
COHORT = ["pat-onc-01", "pat-onc-02", "pat-onc-03", "pat-onc-05", "pat-gen-01"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from sandbox import Sandbox
    from sandbox.bulk import put_group

    root = tmp_path_factory.mktemp("batch-sb")
    key = ClientKey.generate("ES384")
    (root / "key.pem").write_bytes(key.pem())
    sb = Sandbox(data_dir=root / "sb", token_lifetime=20,
                 clients=[{"client_id": CLIENT, "type": "backend", "jwks": key.public_jwks(),
                           "scopes": "system/*.rs system/DocumentReference.cu system/Provenance.c "
                                     "system/Device.cru"}])
    sb.start()
    put_group(sb, "ici-cohort", COHORT)
    sb.key_path = root / "key.pem"
    yield sb
    sb.stop()


def services_for(sb, tmp_path) -> Services:
    settings = load_settings(data_dir=tmp_path / "app", secret_key="batch-test-secret-" + "x" * 20,
                             private_key_path=sb.key_path, backend_client_id=CLIENT, server_profile="sekmet",
                             backend_scopes="system/Patient.rs system/Condition.rs system/DocumentReference.rs "
                                            "system/Binary.r system/Group.r system/DocumentReference.cu "
                                            "system/Provenance.c system/Device.cru")
    return Services(settings)


def connect(services, sb):
    from app.draft_cli import connect as draft_connect

    return Connection(*draft_connect(services, sb.fhir_base, "backend"))


def drafts_on_server(sb) -> list[dict]:
    bundle = requests.get(f"{sb.sekmet_base}/DocumentReference", timeout=30,
                          params={"identifier": "", "_count": "500"},
                          headers={"Accept": "application/fhir+json"}).json()
    docs = [e["resource"] for e in bundle.get("entry") or []]
    return [d for d in docs if any("run" in (i.get("system") or "") for i in d.get("identifier") or [])]


def test_group_export_screens_writes_once_and_resumes(sandbox, tmp_path):
    sandbox.bulk.faults.min_polls = 2  # the client sees 202 + X-Progress before the manifest
    services = services_for(sandbox, tmp_path)
    conn = connect(services, sandbox)
    opts = BatchOptions(fhir_base=sandbox.fhir_base, cohort="Group/ici-cohort", engine="local", workers=0,
                        out=tmp_path / "report", progress=False)
    sleeps: list[float] = []
    summary = run_batch(opts, services=services, connection=conn, sleep=sleeps.append)
    info, totals = summary["batch"], summary["totals"]
    assert info["source"] == "bulk" and info["problems"] == {}
    assert totals["patients"] == len(COHORT) and info["screened_this_run"] == len(COHORT)
    assert info["export_progress_seen"] >= 1 and sleeps and max(sleeps) <= 300
    assert sandbox.bulk.deleted, "the job is deleted when done"
    assert totals["with_findings"] >= 2 and totals["organ_grade"]
    written = totals["draft_states"].get("written", 0)
    assert written == totals["with_findings"]
    # the report names no patient
    report = (tmp_path / "report" / "report.json").read_text() + (tmp_path / "report" / "report.csv").read_text()
    report += (tmp_path / "report" / "report.html").read_text()
    for pid in COHORT:
        assert pid not in report
    assert "organ" in (tmp_path / "report" / "report.html").read_text()
    outbox = services.outbox.all()
    assert len(outbox) == written and all(i["state"] == "sent" for i in outbox)

    # the same command again: nothing screened twice, nothing written twice, no new export
    kickoffs = sandbox.bulk.kickoffs
    again = run_batch(opts, services=services, connection=conn, sleep=sleeps.append)
    assert again["batch"]["screened_this_run"] == 0
    assert again["totals"]["screens_total"] == len(COHORT) and again["totals"]["writes_total"] == written
    assert sandbox.bulk.kickoffs == kickoffs
    assert len(services.outbox.all()) == written


def test_bulk_faults_storm_5xx_and_expired_files(sandbox, tmp_path):
    faults = sandbox.bulk.faults
    faults.kickoff_429, faults.poll_5xx, faults.expire_jobs, faults.file_5xx = 3, 2, 1, 1
    services = services_for(sandbox, tmp_path)
    conn = connect(services, sandbox)
    kickoffs = sandbox.bulk.kickoffs
    opts = BatchOptions(fhir_base=sandbox.fhir_base, cohort="Group/ici-cohort", engine="local", workers=0,
                        write=False, progress=False, out=tmp_path / "r")
    sleeps: list[float] = []
    summary = run_batch(opts, services=services, connection=conn, sleep=sleeps.append)
    assert summary["totals"]["patients"] == len(COHORT)
    assert sandbox.bulk.kickoffs == kickoffs + 2  # the expired job's files forced a second export
    assert (faults.kickoff_429, faults.poll_5xx, faults.expire_jobs, faults.file_5xx) == (0, 0, 0, 0)
    assert summary["totals"]["draft_states"] == {"no_findings": summary["totals"]["patients"]
                                                 - summary["totals"]["with_findings"],
                                                 "not_written:no_write": summary["totals"]["with_findings"]}
    assert not services.outbox.all()


def test_fatal_issue_in_error_file_fails_after_reading_everything(sandbox, tmp_path):
    from app.batch.bulk import BulkJobFailed

    sandbox.bulk.faults.fatal_error_file = 1
    services = services_for(sandbox, tmp_path)
    opts = BatchOptions(fhir_base=sandbox.fhir_base, cohort="Group/ici-cohort", workers=0, write=False,
                        progress=False)
    with pytest.raises(BulkJobFailed) as err:
        run_batch(opts, services=services, connection=connect(services, sandbox), sleep=lambda s: None)
    assert err.value.code == "bulk_error_issues"
    assert sandbox.bulk.deleted  # the job was still deleted


def test_paged_search_cohort_from_a_condition_search_and_a_file(sandbox, tmp_path):
    services = services_for(sandbox, tmp_path)
    conn = connect(services, sandbox)
    ids = tmp_path / "ids.txt"
    ids.write_text("# cohort\nPatient/pat-onc-01\npat-onc-04\n\npat-onc-01\n")
    opts = BatchOptions(fhir_base=sandbox.fhir_base, cohort=str(ids), engine="local", workers=0, write=False,
                        progress=False, out=tmp_path / "r1")
    summary = run_batch(opts, services=services, connection=conn)
    assert summary["batch"]["source"] == "search" and summary["totals"]["patients"] == 2
    cond = requests.get(f"{sandbox.sekmet_base}/Condition", params={"_count": "1"}, timeout=30,
                        headers={"Accept": "application/fhir+json"}).json()["entry"][0]["resource"]
    coding = cond["code"]["coding"][0]
    search = f"Condition?code={coding['system']}|{coding['code']}"
    opts = BatchOptions(fhir_base=sandbox.fhir_base, cohort=search, workers=0, write=False, progress=False,
                        out=tmp_path / "r2")
    summary = run_batch(opts, services=services, connection=conn)
    assert summary["totals"]["patients"] >= 1 and summary["batch"]["problems"] == {}


def test_export_needs_a_backend_token_and_the_files_need_it_too(sandbox):
    resp = requests.get(f"{sandbox.fhir_base}/Group/ici-cohort/$export", headers={"Prefer": "respond-async"},
                        timeout=30)
    assert resp.status_code == 401
    assert os.environ.get("APP_ANTHROPIC_BATCH_ALLOWED") in (None, "", "false")
    body = json.loads(resp.text)
    assert body["resourceType"] == "OperationOutcome"


def all_patients(sb) -> list[str]:
    bundle = requests.get(f"{sb.sekmet_base}/Patient", params={"_count": "500"}, timeout=30,
                          headers={"Accept": "application/fhir+json"}).json()
    return sorted(e["resource"]["id"] for e in bundle["entry"])


def test_killed_half_way_then_rerun_screens_each_patient_once_and_writes_each_draft_once(sandbox, tmp_path):
    """A real SIGKILL of `python -m app batch` during the screen phase, then the same command again."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from sandbox.bulk import put_group

    patients = all_patients(sandbox)
    put_group(sandbox, "everyone", patients)
    env = dict(os.environ, APP_PRIVATE_KEY_PATH=str(sandbox.key_path), APP_BACKEND_CLIENT_ID=CLIENT,
               APP_SECRET_KEY="batch-kill-secret-" + "y" * 20, APP_DATA_DIR=str(tmp_path / "data"),
               APP_SERVER_PROFILE="sekmet", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "app", "batch", "--fhir-base", sandbox.fhir_base, "--cohort", "Group/everyone",
           "--workers", "0", "--no-progress", "--out", str(tmp_path / "report")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: S603
    db = tmp_path / "data" / "batch" / "checkpoints.sqlite"
    done = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                    done = con.execute("SELECT COUNT(*) FROM patient").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 3:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, f"the batch ended before it could be killed ({done} patients)"
    assert 3 <= done < len(patients)

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)  # noqa: S603
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    totals = summary["totals"]
    assert totals["patients"] == len(patients)
    assert summary["batch"]["skipped_already_screened"] >= 3
    with sqlite3.connect(db) as con:
        screens = [r[0] for r in con.execute("SELECT screens FROM patient")]
        writes = [r[0] for r in con.execute("SELECT writes FROM patient")]
    assert screens == [1] * len(patients)  # each patient screened once
    assert max(writes) == 1 and sum(writes) == totals["with_findings"] > 0
    # on the server: one draft per patient with findings, however the kill fell
    bundle = requests.get(f"{sandbox.sekmet_base}/DocumentReference", timeout=30,
                          params={"identifier": "urn:smart-draft-agent:draft-run|", "_count": "1000"},
                          headers={"Accept": "application/fhir+json"}).json()
    run_ids = [i["value"] for e in bundle.get("entry") or [] for i in e["resource"].get("identifier") or []
               if i.get("system") == "urn:smart-draft-agent:draft-run"]
    mine = [r for r in run_ids if r in set(_batch_run_ids(db))]  # run ids: HMACs of batch and patient
    assert len(mine) == len(set(mine)) == totals["with_findings"]


def _batch_run_ids(db) -> list[str]:
    import sqlite3

    with sqlite3.connect(db) as con:
        return [r[0] for r in con.execute("SELECT run_id FROM patient WHERE writes > 0")]


def _cli_batch(sb, tmp_path, engine: str) -> dict:  # type: ignore[no-untyped-def]
    """``python -m app batch`` as a user runs it: a new process, Backend Services auth, the
    Group's Bulk export, screening on ``engine``, no write."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    env.update(APP_DATA_DIR=str(tmp_path / f"app-{engine}"), APP_SECRET_KEY="batch-cli-secret-" + "x" * 20,
               APP_PRIVATE_KEY_PATH=str(sb.key_path), APP_BACKEND_CLIENT_ID=CLIENT,
               APP_SERVER_PROFILE="sekmet", HF_HUB_OFFLINE="1",
               APP_BACKEND_SCOPES="system/Patient.rs system/Condition.rs system/DocumentReference.rs "
                                  "system/Binary.r system/Group.r")
    proc = subprocess.run([sys.executable, "-m", "app", "batch", "--fhir-base", sb.fhir_base,
                           "--cohort", "Group/ici-cohort", "--engine", engine, "--workers", "2",
                           "--no-write", "--no-progress", "--out", str(tmp_path / f"report-{engine}")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for pid in COHORT:
        assert pid not in proc.stdout and pid not in proc.stderr  # counts only
    return json.loads(proc.stdout)


def test_cli_batch_on_ray_gives_the_local_engines_results(sandbox, tmp_path):
    pytest.importorskip("ray")
    local = _cli_batch(sandbox, tmp_path, "local")
    ray_run = _cli_batch(sandbox, tmp_path, "ray")
    assert ray_run["batch"]["engine"] == "ray" and local["batch"]["engine"] == "local"
    assert local["totals"]["patients"] == ray_run["totals"]["patients"] == len(COHORT)
    assert local["totals"]["with_findings"] >= 2
    for key in ("with_findings", "organ_grade", "draft_states"):
        assert ray_run["totals"][key] == local["totals"][key], key
