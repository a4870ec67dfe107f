"""Load: 50 simulated clinicians over 4 gunicorn workers on PostgreSQL, one worker SIGKILLed midway.

    .venv/bin/python benchmarks/locust/bench_load.py [--users 50] [--minutes 4] [--kill-after 90]

Everything on 127.0.0.1: a throw-away PostgreSQL (tests/pgserver.py), the
sandbox EHR (sekmet + authorization server), the app under
``gunicorn -c deploy/gunicorn.conf.py`` with 4 gthread workers, and locust
headless (benchmarks/locust/locustfile.py), bounded in users and time. After
``--kill-after`` seconds one worker gets SIGKILL (gunicorn respawns it). At the
end it checks that no run is left running, that every draft in the database
is in the outbox and reached the EHR exactly once (counted by run identifier
on the FHIR server), and writes p50/p95 per endpoint, throughput and error
counts to benchmarks/results/load.json. Not run by ``make test``; ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.devstack import backend_key, dev_secret, free_port  # noqa: E402
from app.smart.backend import ClientKey  # noqa: E402
from app.writeback.builders import IDENTIFIER_SYSTEM  # noqa: E402

BIN = Path(sys.executable).parent
USERS = ["prac-onc-1", "prac-gp-1"]
PATIENTS = [f"pat-onc-{i:02d}" for i in range(1, 5)]  # 4 charts, 50 clinicians


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--kill-after", type=float, default=90.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    args = ap.parse_args()
    assert args.minutes <= 10, "bounded: at most 10 minutes"

    from sandbox import Sandbox
    from tests.pgserver import start_server, unavailable_reason

    if unavailable_reason():
        print("skipped:", unavailable_reason())  # noqa: T201
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="sda-load-"))
    pg = start_server()
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    client = {"client_id": "smart-draft-agent", "type": "public", "redirect_uris": [app_url + "/callback"]}
    backend = {"client_id": "draft-agent-backend", "type": "backend",
               "jwks": ClientKey.load(backend_key(tmp)).public_jwks()}
    sb = Sandbox(data_dir=tmp / "sandbox", port=0, app_launch_url=app_url + "/launch", token_lifetime=3600,
                 clients=[client, backend])
    sb.start()
    database_url = pg.new_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "GUNICORN_"))}
    env.update({"APP_FHIR_BASE_URL": sb.fhir_base, "APP_ALLOWED_ISS": sb.fhir_base,
                "APP_REDIRECT_URI": app_url + "/callback", "APP_DATA_DIR": str(tmp / "app"),
                "APP_SECRET_KEY": dev_secret(tmp), "APP_SERVER_PROFILE": "sekmet", "APP_DATABASE_URL": database_url,
                "APP_SESSION_LIFETIME_S": "7200",
                "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(args.workers),
                "GUNICORN_THREADS": "8", "PYTHONPATH": str(ROOT)})
    log = open(tmp / "gunicorn.log", "wb")  # noqa: SIM115
    gun = subprocess.Popen([str(BIN / "gunicorn"), "-c", str(ROOT / "deploy/gunicorn.conf.py"),  # noqa: S603
                            "app.wsgi:application"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    result: dict = {"users": args.users, "workers": args.workers, "minutes": args.minutes,
                    "database": "postgresql", "backend": "offline"}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if requests.get(app_url + "/healthz", timeout=2).ok and len(_children(gun.pid)) == args.workers:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        # warm the models and the shared encrypted embedding cache: one launch per patient, until indexed
        # (during the load a worker that lacks a session's index rebuilds it from that cache)
        links = [sb.launch_link(user=USERS[i % len(USERS)], patient=PATIENTS[i % len(PATIENTS)])
                 for i in range(args.users)]
        warm_started = time.monotonic()
        for link in links[: len(PATIENTS)]:
            http = requests.Session()
            http.get(link, timeout=300)
            until = time.monotonic() + 400
            while time.monotonic() < until:
                if http.get(app_url + "/api/index-status", timeout=300).json()["progress"]["state"] == "ready":
                    break
                time.sleep(1)
        result["warm_up_s"] = round(time.monotonic() - warm_started, 1)
        env_l = dict(env, LAUNCH_LINKS="|".join(links))
        killed: dict = {}

        def kill_one() -> None:
            time.sleep(args.kill_after)
            victims = _children(gun.pid)
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                killed.update(pid=victims[0], at_s=args.kill_after)

        threading.Thread(target=kill_one, daemon=True).start()
        started = time.monotonic()
        subprocess.run([str(BIN / "locust"), "-f", str(ROOT / "benchmarks/locust/locustfile.py"), "--headless",  # noqa: S603
                        "-u", str(args.users), "-r", "2", "-t", f"{int(args.minutes * 60)}s", "--host", app_url,
                        "--csv", str(tmp / "load"), "--only-summary", "--stop-timeout", "60"],
                       cwd=ROOT, env=env_l, check=False, timeout=args.minutes * 60 + 240)
        result["wall_s"] = round(time.monotonic() - started, 1)
        result["killed_worker"] = killed
        with open(tmp / "load_stats.csv") as fh:
            rows = list(csv.DictReader(fh))
        result["endpoints"] = {
            r["Name"]: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                        "p50_ms": float(r["50%"] or 0), "p95_ms": float(r["95%"] or 0),
                        "rps": round(float(r["Requests/s"]), 2)}
            for r in rows if r["Name"] != "Aggregated"}
        agg = next(r for r in rows if r["Name"] == "Aggregated")
        result["total"] = {"requests": int(agg["Request Count"]), "failures": int(agg["Failure Count"]),
                           "p50_ms": float(agg["50%"]), "p95_ms": float(agg["95%"]),
                           "rps": round(float(agg["Requests/s"]), 2)}
        failures = tmp / "load_failures.csv"
        result["failure_kinds"] = list(csv.DictReader(open(failures))) if failures.exists() else []  # noqa: SIM115
        time.sleep(35)  # past the jobs' stale limit
        result["consistency"] = check(database_url, sb)
    finally:
        gun.send_signal(signal.SIGTERM)
        try:
            gun.wait(60)
        except subprocess.TimeoutExpired:
            gun.kill()
        sb.stop()
        pg.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))  # noqa: T201
    return 0


def check(database_url: str, sb) -> dict:  # type: ignore[no-untyped-def]
    """Every job final, every draft in the outbox, each written draft on the EHR exactly once."""
    from sqlalchemy import func, select

    from app.store.db import make_engine, make_sessionmaker
    from app.store.models import DraftRecord, JobRecord, OutboxItem, RunRecord
    from app.store.records import JobStore

    maker = make_sessionmaker(make_engine(database_url))
    JobStore(maker).reap()
    with maker() as db:
        jobs = dict(db.execute(select(JobRecord.state, func.count()).group_by(JobRecord.state)).all())
        lost = db.scalar(select(func.count()).select_from(JobRecord).where(JobRecord.error_code == "worker_lost"))
        drafts = db.scalars(select(DraftRecord.run_id)).all()
        outbox = dict(db.execute(select(OutboxItem.run_id, OutboxItem.state)).all())
        runs = db.scalar(select(func.count()).select_from(RunRecord))
    on_server: dict[str, int] = {}
    for run_id in outbox:
        bundle = requests.get(f"{sb.sekmet_base}/DocumentReference",
                              params={"identifier": f"{IDENTIFIER_SYSTEM}|{run_id}", "_summary": "count"},
                              headers={"Accept": "application/fhir+json", "Cache-Control": "no-cache"},
                              timeout=30).json()
        on_server[run_id] = int(bundle.get("total", len(bundle.get("entry", []))))
    return {"jobs_by_state": jobs, "jobs_worker_lost": lost, "jobs_left_running": jobs.get("running", 0)
            + jobs.get("writing", 0), "runs_in_ledger": runs, "drafts": len(drafts),
            "drafts_without_outbox_item": sum(1 for d in drafts if d not in outbox),
            "outbox_by_state": {s: sum(1 for v in outbox.values() if v == s) for s in set(outbox.values())},
            "sent_not_on_server_once": sum(1 for r, s in outbox.items() if s == "sent" and on_server[r] != 1),
            "duplicated_on_server": sum(1 for n in on_server.values() if n > 1)}


if __name__ == "__main__":
    raise SystemExit(main())
