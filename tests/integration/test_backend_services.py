"""SMART Backend Services: the headless CLI path against the sandbox's authorization server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests

from app.devstack import BACKEND_CLIENT_ID, dev_secret

pytestmark = pytest.mark.integration


def cli_env(stack, tmp_path, **extra):
    env = dict(os.environ)
    env.update({"APP_PRIVATE_KEY_PATH": str(stack.backend_key_path), "APP_BACKEND_CLIENT_ID": BACKEND_CLIENT_ID,
                "APP_SECRET_KEY": dev_secret(tmp_path), "APP_DATA_DIR": str(tmp_path / "cli"),
                "HF_HUB_OFFLINE": "1", **extra})
    return env


def test_draft_cli_with_backend_services_prints_the_contract_and_writes(stack, tmp_path):
    cmd = [sys.executable, "-m", "app", "draft", "--fhir-base", stack.sandbox.fhir_base, "--patient", "pat-onc-01",
           "--task", "irae", "--write", "--json"]
    out = subprocess.run(cmd, env=cli_env(stack, tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    body = json.loads(out.stdout)
    assert body["mode"] == "backend-services" and body["task"] == "irae" and body["patient"] == "pat-onc-01"
    assert set(body) >= {"task", "patient", "status", "draft", "findings", "flags", "run", "written"}
    for sentence in body["draft"]["sentences"]:
        for c in sentence["citations"]:
            assert set(c) >= {"document", "version", "start", "end", "quote"}
    ref = body["written"]["document_reference"]
    doc = requests.get(f"{stack.sandbox.sekmet_base}/{ref}", timeout=30).json()
    assert doc["docStatus"] == "preliminary"
    # the draft names no user (no user in a backend job) and the stderr carries no token
    assert "Bearer" not in out.stderr and "eyJ" not in out.stderr


def test_backend_client_without_a_registered_key_is_refused(stack, tmp_path):
    from app.smart.backend import ClientKey

    rogue = tmp_path / "rogue.pem"
    rogue.write_bytes(ClientKey.generate("RS384").pem())
    cmd = [sys.executable, "-m", "app", "draft", "--fhir-base", stack.sandbox.fhir_base, "--patient", "pat-onc-01",
           "--task", "summary", "--auth", "backend", "--json"]
    out = subprocess.run(cmd, env=cli_env(stack, tmp_path, APP_PRIVATE_KEY_PATH=str(rogue)),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "invalid_client" in out.stderr and "Traceback" not in out.stderr
