"""Simulated clinicians for benchmarks/locust/bench_load.py (locust, headless, 127.0.0.1 only).

Each user launches from the sandbox EHR (SMART EHR launch: authorize, PKCE,
callback), opens the chart and waits for its index, then loops: draft a
summary (offline backend) and review it. Even users draft through the JSON
API and approve; odd users start a job from the page, poll it (possibly on
another worker) and reject. LAUNCH_LINKS (env, ``|``-separated) are the
sandbox launcher links to use, one per user in turn.
"""

from __future__ import annotations

import itertools
import os
import re
import time

from locust import HttpUser, between, task

LINKS = itertools.cycle(os.environ["LAUNCH_LINKS"].split("|"))
_COUNTER = itertools.count()


class Clinician(HttpUser):
    wait_time = between(1, 3)

    def on_start(self) -> None:
        self.n = next(_COUNTER)
        resp = self.client.get(next(LINKS), name="launch (EHR → authorize → callback → chart)", timeout=300)
        m = re.search(r'name="csrf-token" content="([^"]+)"', resp.text)
        self.csrf = m.group(1) if m else ""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            r = self.client.get("/api/index-status", name="/api/index-status", timeout=120)
            if r.ok and r.json()["progress"]["state"] in ("ready", "failed"):
                break
            time.sleep(1)

    @task
    def draft_and_review(self) -> None:
        h = {"X-CSRF-Token": self.csrf}
        if self.n % 2 == 0:
            r = self.client.post("/api/drafts", json={"task": "summary"}, headers=h, name="POST /api/drafts",
                                 timeout=300)
            if r.status_code != 201 or r.json()["writeback"]["state"] != "written":
                return
            run_id = r.json()["run"]["run_id"]
            self.client.post(f"/api/drafts/{run_id}/review", json={"action": "approve", "ack_unsupported": True},
                             headers=h, name="POST /api/drafts/[run]/review (approve)", timeout=120)
            return
        r = self.client.post("/drafts", data={"task": "summary", "csrf_token": self.csrf}, allow_redirects=False,
                             name="POST /drafts (job)", timeout=120)
        if r.status_code != 302:
            return
        key = r.headers["Location"].rsplit("/", 1)[1]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            s = self.client.get(f"/api/runs/{key}", name="/api/runs/[key]", timeout=60)
            if not s.ok:
                return
            body = s.json()
            if body["state"] not in ("running", "writing"):
                break
            time.sleep(1)
        else:
            return
        if body["state"] == "done" and body["draft_url"]:
            run_id = body["draft_url"].rsplit("/", 1)[1]
            self.client.get(f"/drafts/{run_id}", name="/drafts/[run]", timeout=60)
            self.client.post(f"/api/drafts/{run_id}/review", json={"action": "reject", "reason": "inaccurate"},
                             headers=h, name="POST /api/drafts/[run]/review (reject)", timeout=120)
