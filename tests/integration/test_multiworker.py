"""Four app processes sharing only the database: every step of one session on a different worker.

Each worker is a real gunicorn (deploy/gunicorn.conf.py, gthread) process on
its own port, so nothing is shared but the database (PostgreSQL when the
binaries are there, else one SQLite file) and the encrypted embedding cache
directory. Launch on W1, callback on W2, chart and index on W3, draft on W4
(which lacks the chart and rebuilds it), review on W1, the draft page on W2,
the drafts list on W3, a page-started job polled from another worker, the
admin ledger on W4. Then a worker is SIGKILLed while its job runs: the job
ends ``failed`` (``worker_lost``), nothing stays running, and the respawned
worker serves the session.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from app.devstack import backend_key, dev_secret, free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


class Workers:
    """N gunicorn processes (one worker each) with the same settings; stopped by PID."""

    def __init__(self, tmp: Path, sandbox, database_url: str, n: int = 4) -> None:  # type: ignore[no-untyped-def]
        self.ports = [free_port() for _ in range(n)]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.tmp, self.sandbox, self.database_url = tmp, sandbox, database_url
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.logs: list[Path] = [tmp / f"w{i}.log" for i in range(n)]

    def env(self, i: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "GUNICORN_"))}
        env.update({
            "APP_FHIR_BASE_URL": self.sandbox.fhir_base, "APP_ALLOWED_ISS": self.sandbox.fhir_base,
            "APP_REDIRECT_URI": self.urls[1] + "/callback",  # the EHR sends every callback to W2
            "APP_DATA_DIR": str(self.tmp / "app"), "APP_SECRET_KEY": dev_secret(self.tmp),
            "APP_SERVER_PROFILE": "sekmet", "APP_DATABASE_URL": self.database_url, "APP_TESTING": "false",
            "GUNICORN_BIND": f"127.0.0.1:{self.ports[i]}", "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "8",
            "PYTHONPATH": str(ROOT)})
        return env

    def start(self, i: int) -> None:
        with open(self.logs[i], "ab") as log:
            self.procs[i] = subprocess.Popen(  # noqa: S603
                [str(GUNICORN), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "app.wsgi:application"],
                cwd=ROOT, env=self.env(i), stdout=log, stderr=subprocess.STDOUT)

    def wait_healthy(self, i: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.procs[i].poll() is None, self.logs[i].read_text()[-2000:]
            try:
                if requests.get(self.urls[i] + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker {i} did not start: {self.logs[i].read_text()[-2000:]}")

    def worker_pid(self, i: int) -> int:
        """The pid of the gunicorn worker (child of the master)."""
        master = self.procs[i].pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
            if children:
                return int(children[0])
            time.sleep(0.1)
        raise AssertionError("no worker process")

    def stop(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs[i] = None

    def stop_all(self) -> None:
        for i in range(len(self.procs)):
            self.stop(i)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request):  # type: ignore[no-untyped-def]
    from sandbox import Sandbox
    from tests.pgserver import unavailable_reason

    tmp = tmp_path_factory.mktemp("cluster")
    if unavailable_reason() is None:
        database_url = request.getfixturevalue("postgres").new_database()
    else:
        database_url = f"sqlite:///{tmp / 'shared.db'}"
    ports_probe = Workers(tmp, None, database_url)  # ports first: the sandbox needs the redirect URIs
    from app.smart.backend import ClientKey

    client = {"client_id": "smart-draft-agent", "type": "public",
              "redirect_uris": [u + "/callback" for u in ports_probe.urls]}
    backend = {"client_id": "draft-agent-backend", "type": "backend",
               "jwks": ClientKey.load(backend_key(tmp)).public_jwks()}
    sb = Sandbox(data_dir=tmp / "sandbox", port=0, app_launch_url=ports_probe.urls[0] + "/launch",
                 token_lifetime=600, clients=[client, backend])
    sb.start()
    ports_probe.sandbox = sb
    try:
        for i in range(4):
            ports_probe.start(i)
        for i in range(4):
            ports_probe.wait_healthy(i)
        yield ports_probe
    finally:
        ports_probe.stop_all()
        sb.stop()


def _launch(cluster, http: requests.Session, user: str, patient: str) -> None:  # type: ignore[no-untyped-def]
    """Launch on W1; the EHR's redirect brings the code to W2's callback; stop before the chart."""
    url = cluster.sandbox.launch_redirect(user, patient)
    assert url.startswith(cluster.urls[0])
    hops = []
    for _ in range(10):
        resp = http.get(url, allow_redirects=False, timeout=60)
        assert resp.status_code in (302, 303), (resp.status_code, resp.text[:300])
        hops.append(f"{urlparse(url).port}{urlparse(url).path}")
        if urlparse(url).path == "/callback":
            break
        url = requests.compat.urljoin(url, resp.headers["Location"])
    assert hops[0] == f"{cluster.ports[0]}/launch" and hops[-1] == f"{cluster.ports[1]}/callback", hops


def test_every_step_of_a_session_on_a_different_worker(cluster):  # type: ignore[no-untyped-def]
    w1, w2, w3, w4 = cluster.urls
    http = requests.Session()
    _launch(cluster, http, "prac-onc-1", "pat-onc-01")          # launch W1, callback W2
    chart = http.get(w3 + "/", timeout=120)                     # chart and indexing on W3
    assert chart.status_code == 200, chart.text[:300]
    csrf = csrf_of(chart.text)
    deadline = time.monotonic() + 240
    while http.get(w3 + "/api/index-status", timeout=30).json()["progress"]["state"] != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    drafted = http.post(w4 + "/api/drafts", json={"task": "summary"},  # W4 rebuilds the index
                        headers={"X-CSRF-Token": csrf}, timeout=300)
    assert drafted.status_code == 201, drafted.text[:300]
    run_id = drafted.json()["run"]["run_id"]
    assert drafted.json()["writeback"]["state"] == "written"
    approved = http.post(f"{w1}/api/drafts/{run_id}/review", json={"action": "approve", "ack_unsupported": True},
                         headers={"X-CSRF-Token": csrf}, timeout=60)  # review on W1
    assert approved.status_code == 200, approved.text[:300]
    page = http.get(f"{w2}/drafts/{run_id}", timeout=60)        # the draft page on W2
    assert page.status_code == 200 and 'id="review-result"' in page.text \
        and "Approved: your decision is recorded" in page.text
    listing = http.get(w3 + "/", timeout=60)                    # the drafts list on W3
    assert f"/drafts/{run_id}" in listing.text
    # a job started from the page on W4, polled on W1 until done
    started = http.post(w4 + "/drafts", data={"task": "summary", "csrf_token": csrf}, allow_redirects=False,
                        timeout=60)
    assert started.status_code == 302
    key = started.headers["Location"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 240
    while (status := http.get(f"{w1}/api/runs/{key}", timeout=30).json())["state"] in ("running", "writing"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert status["state"] == "done" and status["draft_url"], status
    # the admin ledger (another session, an administrator) on W4 lists both runs
    admin = requests.Session()
    _launch(cluster, admin, "prac-admin-1", "pat-onc-01")
    ledger = admin.get(w4 + "/admin", timeout=60)
    job_run = status["draft_url"].rsplit("/", 1)[1]
    assert ledger.status_code == 200 and f"<code>{run_id[:8]}</code>" in ledger.text
    assert f"<code>{job_run[:8]}</code>" in ledger.text


def test_a_killed_workers_job_ends_failed_and_the_session_goes_on(cluster):  # type: ignore[no-untyped-def]
    w1, w2, w3, _w4 = cluster.urls
    http = requests.Session()
    _launch(cluster, http, "prac-onc-1", "pat-onc-02")
    csrf = csrf_of(http.get(w1 + "/", timeout=120).text)  # W1 opens the chart; W2 has none
    victim = cluster.worker_pid(1)
    started = http.post(w2 + "/drafts", data={"task": "summary", "csrf_token": csrf}, allow_redirects=False,
                        timeout=60)
    key = started.headers["Location"].rsplit("/", 1)[1]
    assert http.get(f"{w3}/api/runs/{key}", timeout=30).json()["state"] == "running"
    os.kill(victim, signal.SIGKILL)  # W2's worker dies while it (re)builds the chart for the job
    deadline = time.monotonic() + 60
    while (status := http.get(f"{w3}/api/runs/{key}", timeout=30).json())["state"] in ("running", "writing"):
        assert time.monotonic() < deadline, "the dead worker's job stayed running"
        time.sleep(0.3)
    assert status == {"state": "failed", "task": "summary", "error_code": "worker_lost", "draft_url": None}
    cluster.wait_healthy(1)  # gunicorn respawned the worker; it serves the same session
    assert cluster.worker_pid(1) != victim
    again = http.post(w2 + "/api/drafts", json={"task": "summary"}, headers={"X-CSRF-Token": csrf}, timeout=300)
    assert again.status_code == 201 and again.json()["writeback"]["state"] == "written", again.text[:300]
