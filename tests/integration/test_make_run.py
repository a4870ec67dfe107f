"""``make run`` prints a launch link; following it like a browser lands on the patient's chart."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app.devstack import free_port

pytestmark = pytest.mark.integration
BUNDLES = Path(__file__).resolve().parents[2] / "synthetic_data" / "bundles"


def family_of(patient_id: str) -> str:
    bundle = json.loads((BUNDLES / f"{patient_id}.json").read_text())
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return patient["name"][0]["family"]


def test_run_prints_a_launch_link_that_opens_the_chart(tmp_path):
    app_port = free_port()
    cmd = [sys.executable, "-m", "app.run", "--data-dir", str(tmp_path / "run"),
           "--app-port", str(app_port), "--sandbox-port", str(free_port())]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        link = None
        deadline = time.monotonic() + 120
        while link is None and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            if line.startswith("Launch link:"):
                link = line.split(":", 1)[1].strip()
        assert link, f"no launch link printed (exit code {proc.poll()})"
        http = requests.Session()
        resp = http.get(link, timeout=120)
        assert resp.status_code == 200
        assert resp.url.rstrip("/") == f"http://127.0.0.1:{app_port}"  # on the app's chart, not the EHR
        assert family_of("pat-onc-01") in resp.text
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
