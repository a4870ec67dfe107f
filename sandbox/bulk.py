"""FHIR Bulk Data Access v2 (``$export``) on the sandbox's protected FHIR base, over sekmet.

https://hl7.org/fhir/uv/bulkdata/STU2/export.html

- Kick-off: ``GET|POST /fhir/Group/<id>/$export`` and ``/fhir/Patient/$export`` with
  ``Prefer: respond-async`` (else 400); a backend (``system/``) token whose scopes allow
  search on every exported type (``_type``; without it, the types the token may search).
  202 + ``Content-Location`` of the status URL. One export at a time per client and group
  (as Epic): a second kick-off answers 429 with ``Retry-After`` until the first is deleted.
- Status: 202 with ``X-Progress`` and ``Retry-After`` while running (at least ``min_polls``
  times), 200 with the manifest (``requiresAccessToken: true``; file URLs on this base),
  ``DELETE`` ends the job (202).
- Files: NDJSON, only with a valid token of the client that started the export.
- ``_type``, ``_since`` and ``_typeFilter`` are passed to sekmet's own export, which runs it.

Faults for client tests (``BulkFaults``, on ``sandbox.bulk.faults``): the next N kick-offs
answer 429 (a storm), the next N polls answer 503 with an OperationOutcome ``transient``,
the files of the next N jobs have expired (410), the manifest of the next N jobs lists an
error file with a fatal issue, and ``ignore_type_filter`` makes the server ignore
``_typeFilter`` (as some do).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import requests
from flask import Blueprint, Response, request

from sandbox import scopes as sc
from sandbox.proxy import outcome

if TYPE_CHECKING:
    from sandbox.server import Sandbox

EXPORT_TYPES = ("Patient", "Condition", "DocumentReference", "Encounter", "Observation",
                "MedicationRequest", "Procedure", "AllergyIntolerance", "DiagnosticReport", "Immunization")
NDJSON = "application/fhir+ndjson"


@dataclass
class BulkFaults:
    """Injectable misbehaviour; each counter is consumed as it fires."""

    kickoff_429: int = 0  # the next N kick-offs answer 429 + Retry-After
    poll_5xx: int = 0  # the next N status polls answer 503 (OperationOutcome code transient)
    poll_429: int = 0  # the next N status polls answer 429
    expire_jobs: int = 0  # the files of the next N completed jobs answer 410 Gone
    fatal_error_file: int = 0  # the next N manifests list an error NDJSON with a fatal issue
    file_5xx: int = 0  # the next N file downloads answer 503
    ignore_type_filter: bool = False  # drop _typeFilter before sekmet sees it
    retry_after_s: int = 1  # Retry-After on 202 and 429
    min_polls: int = 1  # a job answers 202 at least this many times


@dataclass
class Job:
    id: str
    client_id: str
    group: str | None
    upstream_status: str
    polls: int = 0
    manifest: dict | None = None
    expired: bool = False
    errors: list[str] = field(default_factory=list)  # NDJSON lines of injected error files


class BulkExport:
    """The ``$export`` endpoints of one sandbox; ``jobs`` and ``faults`` are inspectable by tests."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.faults = BulkFaults()
        self.jobs: dict[str, Job] = {}
        self.deleted: list[str] = []
        self.kickoffs = 0
        self.lock = threading.Lock()
        self.http = requests.Session()

    # ---- helpers -----------------------------------------------------------
    @property
    def upstream(self) -> str:
        return self.sb.sekmet_base.rstrip("/")

    @property
    def public(self) -> str:
        return self.sb.fhir_base.rstrip("/")

    def _take(self, name: str) -> bool:
        with self.lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                return True
            return False

    def _verify(self) -> tuple[dict[str, Any], bool] | Response:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return outcome(401, "login", "A bearer token is required")
        verified = self.sb.auth.verify_access_token(header[7:].strip())
        if verified is None:
            return outcome(401, "login", "The access token is invalid or expired")
        claims, rec = verified
        return claims, rec.grant_type == "client_credentials"

    def _too_many(self, text: str) -> Response:
        resp = outcome(429, "throttled", text)
        resp.headers["Retry-After"] = str(self.faults.retry_after_s)
        return resp

    # ---- kick-off ------------------------------------------------------------
    def kickoff(self, group_id: str | None = None) -> Response:
        verified = self._verify()
        if isinstance(verified, Response):
            return verified
        claims, backend = verified
        if "respond-async" not in request.headers.get("Prefer", "").lower():
            return outcome(400, "invalid", "Bulk export requires 'Prefer: respond-async'")
        if not backend:
            return outcome(403, "forbidden", "Bulk export needs a backend (system/) token")
        params = list(parse_qsl(request.query_string.decode(), keep_blank_values=True))
        if request.method == "POST" and request.get_data():
            try:
                body = json.loads(request.get_data())
            except ValueError:
                return outcome(400, "invalid", "The body is not a Parameters resource")
            for p in (body or {}).get("parameter") or []:
                value = next((v for k, v in p.items() if k.startswith("value")), None)
                if value is not None:
                    params.append((str(p.get("name")), str(value)))
        granted = sc.split(claims.get("scope"))
        asked = [t for k, v in params if k == "_type" for t in v.split(",") if t]
        types = asked or [t for t in EXPORT_TYPES if sc.check(granted, t, "s", allow_system=True).allowed]
        for rtype in types:
            decision = sc.check(granted, rtype, "s", allow_system=True)
            if not decision.allowed or decision.compartment:
                return outcome(403, "forbidden", f"The token's scopes do not allow exporting {rtype}")
        if self._take("kickoff_429"):
            return self._too_many("Too many export requests; retry later")
        client_id = str(claims.get("client_id") or claims.get("sub") or "")
        with self.lock:
            if any(j.client_id == client_id and j.group == group_id for j in self.jobs.values()):
                return self._too_many("An export for this client and group is still active; delete it first")
            self.kickoffs += 1
        query = [(k, v) for k, v in params if k not in ("_type", "_typeFilter")]
        query.append(("_type", ",".join(types)))
        if not self.faults.ignore_type_filter:
            query += [(k, v) for k, v in params if k == "_typeFilter"]
        path = f"Group/{group_id}/$export" if group_id else "Patient/$export"
        upstream = self.http.get(f"{self.upstream}/{path}", params=query, timeout=60,
                                 headers={"Prefer": "respond-async", "Accept": "application/fhir+json"})
        if upstream.status_code != 202:
            return Response(upstream.content.replace(self.upstream.encode(), self.public.encode()),
                            status=upstream.status_code, content_type="application/fhir+json")
        job = Job(id=secrets.token_hex(8), client_id=client_id, group=group_id,
                  upstream_status=upstream.headers["Content-Location"])
        with self.lock:
            self.jobs[job.id] = job
        resp = Response(status=202)
        resp.headers["Content-Location"] = f"{self.public}/$export-status/{job.id}"
        return resp

    # ---- status ----------------------------------------------------------------
    def _own_job(self, job_id: str, missing: str) -> Job | Response:
        """The caller's job (verified token, same client), or the error response to send."""
        verified = self._verify()
        if isinstance(verified, Response):
            return verified
        claims, _backend = verified
        job = self.jobs.get(job_id)
        if job is None or job.client_id != str(claims.get("client_id") or claims.get("sub") or ""):
            return outcome(404, "not-found", missing)
        return job

    def status(self, job_id: str) -> Response:
        job = self._own_job(job_id, "No such export")
        if isinstance(job, Response):
            return job
        if request.method == "DELETE":
            with self.lock:
                self.jobs.pop(job_id, None)
                self.deleted.append(job_id)
            self.http.delete(job.upstream_status, timeout=30)
            return outcome(202, "informational", "Export deleted")
        if self._take("poll_5xx"):
            return outcome(503, "transient", "The export service is restarting; retry")
        if self._take("poll_429"):
            return self._too_many("Polling too often")
        job.polls += 1
        if job.manifest is None:
            upstream = self.http.get(job.upstream_status, timeout=30, headers={"Accept": "application/json"})
            if upstream.status_code == 202 or job.polls < self.faults.min_polls:
                resp = Response(status=202)
                resp.headers["X-Progress"] = f"in progress ({upstream.headers.get('X-Progress', 'running')})"
                resp.headers["Retry-After"] = str(self.faults.retry_after_s)
                return resp
            if upstream.status_code != 200:
                return outcome(500, "exception", "The export failed")
            job.manifest = self._rewrite(job, upstream.json())
            job.expired = self._take("expire_jobs")
        return Response(json.dumps(job.manifest), status=200, content_type="application/json")

    def _rewrite(self, job: Job, manifest: dict) -> dict:
        def local(entry: dict) -> dict:
            name = str(entry["url"]).rsplit("/", 1)[-1]
            return {**entry, "url": f"{self.public}/$export-file/{job.id}/{name}"}

        out = dict(manifest)
        out["request"] = str(manifest.get("request", "")).replace(self.upstream, self.public)
        out["requiresAccessToken"] = True
        out["output"] = [local(e) for e in manifest.get("output") or []]
        out["error"] = [local(e) for e in manifest.get("error") or []]
        if self._take("fatal_error_file"):
            issue = {"resourceType": "OperationOutcome",
                     "issue": [{"severity": "fatal", "code": "processing",
                                "diagnostics": "Some resources could not be exported"}]}
            job.errors.append(json.dumps(issue))
            out["error"].append({"type": "OperationOutcome", "count": 1,
                                 "url": f"{self.public}/$export-file/{job.id}/injected-errors.ndjson"})
        return out

    # ---- files -----------------------------------------------------------------
    def file(self, job_id: str, name: str) -> Response:
        job = self._own_job(job_id, "No such file")
        if isinstance(job, Response):
            return job
        if job.expired:
            return outcome(410, "not-found", "The export files have expired; start a new export")
        if self._take("file_5xx"):
            return outcome(503, "transient", "The file store is busy; retry")
        if name == "injected-errors.ndjson":
            return Response("".join(line + "\n" for line in job.errors), content_type=NDJSON)
        if "/" in name or ".." in name:
            return outcome(404, "not-found", "No such file")
        base = job.upstream_status.split("/bulk-status/")[0]
        upstream_id = job.upstream_status.rsplit("/", 1)[-1]
        upstream = self.http.get(f"{base}/bulk-files/{upstream_id}/{name}", timeout=60, stream=True)
        if upstream.status_code != 200:
            upstream.close()
            return outcome(404, "not-found", "No such file")
        public, private = self.public.encode(), self.upstream.encode()

        def lines() -> Iterator[bytes]:
            try:
                for line in upstream.iter_lines():
                    yield line.replace(private, public) + b"\n"
            finally:
                upstream.close()

        return Response(lines(), content_type=NDJSON)

    # ---- routes ------------------------------------------------------------------
    def blueprint(self) -> Blueprint:
        bp = Blueprint("bulk_export", __name__)
        bp.add_url_rule("/fhir/Group/<group_id>/$export", "group_export", self.kickoff, methods=["GET", "POST"])
        bp.add_url_rule("/fhir/Patient/$export", "patient_export", self.kickoff, methods=["GET", "POST"])
        bp.add_url_rule("/fhir/$export-status/<job_id>", "export_status", self.status, methods=["GET", "DELETE"])
        bp.add_url_rule("/fhir/$export-file/<job_id>/<name>", "export_file", self.file, methods=["GET"])
        return bp


def bulk_blueprint(sb: Sandbox) -> Blueprint:
    """The blueprint the sandbox's web app registers; the exporter is kept on ``sb.bulk``."""
    if getattr(sb, "bulk", None) is None:
        sb.bulk = BulkExport(sb)  # type: ignore[attr-defined]
    return sb.bulk.blueprint()  # type: ignore[attr-defined]


def put_group(sb: Sandbox, group_id: str, patients: list[str]) -> dict:
    """Create or replace ``Group/<group_id>`` (a cohort of patients) directly in sekmet."""
    group = {"resourceType": "Group", "id": group_id, "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{p}"}} for p in patients]}
    resp = requests.put(f"{sb.sekmet_base}/Group/{group_id}", json=group, timeout=30,
                        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"})
    resp.raise_for_status()
    return dict(resp.json())
