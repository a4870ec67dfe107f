"""``make demo``: the whole path, headless, through real HTTP.

EHR launch (sandbox launcher → app /launch → authorize → /callback → chart),
indexing, an offline draft with citations, the write-back transaction, then
the DocumentReference, Provenance and AuditEvent read back from the FHIR
server. Prints counts, the draft with citations and the FHIR ids; never a
patient's name. Returns a non-zero exit code on any failure.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import requests

from app.devstack import start_stack


class DemoFailure(Exception):
    pass


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([^"]+)"', html)
    if not m:
        raise DemoFailure("the chart page has no CSRF token")
    return m.group(1)


def drive(stack, *, user: str, patient: str, task: str, out: Callable[[str], None]) -> dict:  # type: ignore[no-untyped-def]
    """Launch as ``user`` for ``patient`` through the browser path; draft; read back. Returns a report."""
    http = requests.Session()
    t0 = time.monotonic()
    resp = http.get(stack.launch_link(user=user, patient=patient), timeout=60)
    if resp.status_code != 200 or not resp.url.startswith(stack.app_url):
        raise DemoFailure(f"launch ended at HTTP {resp.status_code}")
    launch_s = time.monotonic() - t0
    token = _csrf(resp.text)
    deadline = time.monotonic() + 600
    while True:
        status = http.get(stack.app_url + "/api/index-status", timeout=30).json()
        if status["progress"]["state"] in ("ready", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if status["progress"]["state"] != "ready":
        raise DemoFailure(f"indexing did not finish: {status['progress']}")
    counts = status["counts"]
    out(f"launch → chart: {launch_s:.1f} s")
    out(f"documents read: {counts.get('read', 0)}  allowed: {counts.get('allowed', 0)}  "
        f"chunks indexed: {status['chunks']}")
    for key, value in sorted(counts.items()):
        if key.startswith(("denied:", "skipped:")):
            out(f"  {key}: {value}")
    resp = http.post(stack.app_url + "/api/drafts", json={"task": task},
                     headers={"X-CSRF-Token": token}, timeout=600)
    if resp.status_code != 201:
        raise DemoFailure(f"drafting failed with HTTP {resp.status_code}: {resp.text[:200]}")
    result = resp.json()
    return {"counts": counts, "chunks": status["chunks"], "draft": result, "launch_s": launch_s}


def read_back(stack, written: dict, out: Callable[[str], None]) -> dict:  # type: ignore[no-untyped-def]
    """Read the written resources from the FHIR store itself (not the app's memory)."""
    found = {}
    for key in ("document_reference", "provenance", "audit_event"):
        ref = written.get(key)
        if not ref:
            raise DemoFailure(f"nothing was written for {key}")
        rtype, rid = ref.split("/")[:2]
        resp = requests.get(f"{stack.sandbox.sekmet_base}/{rtype}/{rid}",
                            headers={"Accept": "application/fhir+json", "Cache-Control": "no-cache"},
                            timeout=30)
        if resp.status_code != 200:
            raise DemoFailure(f"{rtype}/{rid} could not be read back (HTTP {resp.status_code})")
        found[key] = resp.json()
    doc = found["document_reference"]
    out(f"DocumentReference/{doc['id']}  status={doc.get('status')} docStatus={doc.get('docStatus')} "
        f"labels={[s.get('code') for s in (doc.get('meta') or {}).get('security') or []]}")
    prov = found["provenance"]
    out(f"Provenance/{prov['id']}  target={[t.get('reference') for t in prov.get('target', [])]} "
        f"sources={len(prov.get('entity', []))}")
    out(f"AuditEvent/{found['audit_event']['id']}  action={found['audit_event'].get('action')}")
    if doc.get("docStatus") != "preliminary":
        raise DemoFailure("the draft is not preliminary")
    return found


def run_demo(*, user: str, patient: str, task: str, out: Callable[[str], None]) -> int:
    data_dir = Path(os.environ.get("APP_DATA_DIR", "var/demo"))
    started = time.monotonic()
    out("starting the EHR sandbox (sekmet-fhir + SMART authorization server) and the app ...")
    stack = start_stack(data_dir)
    try:
        report = drive(stack, user=user, patient=patient, task=task, out=out)
        draft = report["draft"]
        out(f"\ndraft ({draft['task']}, status {draft['status']}, backend {draft['run']['backend']}, "
            f"unsupported sentences {draft['flags']['unsupported_sentences']}):")
        for i, sentence in enumerate(draft["draft"]["sentences"], 1):
            cites = ", ".join(f"{c['document']}@{c['version']}[{c['start']}:{c['end']}]"
                              for c in sentence["citations"]) or "UNSUPPORTED"
            out(f"  {i}. {sentence['text']}\n     ↳ {cites}")
        if draft["flags"]["injection_suspected"]:
            out(f"injection suspected in: {', '.join(draft['flags']['injection_suspected'])}")
        out(f"\nwrite-back: {draft['writeback']['state']}")
        if not draft.get("written"):
            raise DemoFailure(f"write-back did not happen: {draft['writeback']['reason']}")
        read_back(stack, draft["written"], out)
    except DemoFailure as exc:
        out(f"DEMO FAILED: {exc}")
        return 1
    finally:
        stack.stop()
    out(f"\ndemo finished in {time.monotonic() - started:.1f} s")
    return 0
