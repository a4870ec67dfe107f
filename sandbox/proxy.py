"""Scope-enforcing FHIR proxy in front of sekmet-fhir (the sandbox's protected FHIR base).

- Bearer token required (RFC 6750 s3: 401 + ``WWW-Authenticate: Bearer``),
  except ``GET /metadata`` (FHIR R4 http.html#capabilities);
- each interaction needs a matching scope (SMART App Launch 2.2.0
  "Scopes for requesting clinical data": read/vread -> r, search -> s,
  create -> c, update/patch -> u, delete -> d), else 403;
- a grant that only comes from ``patient/`` scopes is limited to the launch
  patient's compartment (FHIR R4 compartmentdefinition-patient);
- responses pass through with sekmet's base rewritten to the proxy base.
Errors are OperationOutcomes (FHIR R4 operationoutcome.html).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any
from urllib.parse import parse_qsl, urlencode

import requests
from flask import Blueprint, Response, request

from sandbox import scopes as sc
from sandbox.oauth import SmartAuthServer

log = logging.getLogger(__name__)

FORWARD_REQUEST = ("Content-Type", "Accept", "Prefer", "If-Match", "If-None-Exist", "If-None-Match",
                   "If-Modified-Since")
FORWARD_RESPONSE = ("Content-Type", "Location", "Content-Location", "ETag", "Last-Modified")
# search parameters that name the patient, by resource type (R4 patient compartment, common types)
PATIENT_PARAM = {"Patient": "_id", "Observation": "patient", "Condition": "patient",
                 "DocumentReference": "patient", "Encounter": "patient", "Procedure": "patient",
                 "MedicationRequest": "patient", "AllergyIntolerance": "patient",
                 "DiagnosticReport": "patient", "Immunization": "patient", "CarePlan": "patient",
                 "CareTeam": "patient", "Goal": "patient", "ServiceRequest": "patient",
                 "Provenance": "patient", "AuditEvent": "patient", "Device": "patient",
                 "Composition": "patient", "MedicationStatement": "patient"}
PATIENT_REF_FIELDS = ("subject", "patient", "beneficiary")


class Denied(Exception):
    """A refusal: HTTP status, OperationOutcome issue code and diagnostics."""

    def __init__(self, status: int, code: str, text: str) -> None:
        super().__init__(text)
        self.status, self.code, self.text = status, code, text


def outcome(status: int, code: str, text: str) -> Response:
    body = {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    resp = Response(json.dumps(body), status=status, content_type="application/fhir+json")
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="sandbox", error="invalid_token"'
    elif status == 403:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="sandbox", error="insufficient_scope"'
    return resp


def _patient_id(ref: str | None) -> str | None:
    """``Patient/x``, an absolute ``.../Patient/x`` or a bare id -> ``x``."""
    if not ref:
        return None
    ref = ref.split("|")[0].rstrip("/")
    if "Patient/" in ref:
        return ref.split("Patient/")[-1].split("/")[0]
    return ref if "/" not in ref else None


def patients_of(resource: dict[str, Any]) -> set[str]:
    """Patient ids a resource points at (the resource itself when it is a Patient)."""
    if resource.get("resourceType") == "Patient":
        return {str(resource.get("id"))}
    found: set[str] = set()
    for name in PATIENT_REF_FIELDS:
        ref = resource.get(name)
        if isinstance(ref, dict) and str(ref.get("reference", "")).split("/")[-2:-1] == ["Patient"]:
            pid = _patient_id(ref["reference"])
            if pid:
                found.add(pid)
    return found


class FhirProxy:
    """Forwards authorised FHIR calls to sekmet."""

    def __init__(self, auth: SmartAuthServer, upstream: str, public_base: str) -> None:
        self.auth = auth
        self.upstream = upstream.rstrip("/")
        self.public = public_base.rstrip("/")
        self._local = threading.local()

    @property
    def http(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session  # type: ignore[no-any-return]

    def blueprint(self) -> Blueprint:
        bp = Blueprint("fhir_proxy", __name__)
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        bp.add_url_rule("/fhir", "root", self.handle, methods=methods, defaults={"path": ""})
        bp.add_url_rule("/fhir/<path:path>", "any", self.handle, methods=methods)
        return bp

    # ------------------------------------------------------------------
    def handle(self, path: str) -> Response:
        if path.startswith(".well-known/"):
            return outcome(404, "not-found", "Unknown path")
        if path == "metadata" and request.method == "GET":
            return self._metadata(self.forward(path, request.query_string.decode()))
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return outcome(401, "login", "A bearer token is required")
        verified = self.auth.verify_access_token(header[7:].strip())
        if verified is None:
            return outcome(401, "login", "The access token is invalid or expired")
        claims, rec = verified
        try:
            query = self.authorize(path, claims, backend=rec.grant_type == "client_credentials")
        except Denied as d:
            log.info("refused %s %s: %s", request.method, path.split("/")[0], d.code)
            return outcome(d.status, d.code, d.text)
        return self.forward(path, query, claims=claims)

    def authorize(self, path: str, claims: dict[str, Any], *, backend: bool) -> str:
        """Check scopes and compartment; return the (possibly narrowed) query string."""
        parts = [p for p in path.split("/") if p]
        method = request.method
        granted = sc.split(claims.get("scope"))
        query = list(parse_qsl(request.query_string.decode(), keep_blank_values=True))
        if not parts:
            if method == "POST":
                self._check_bundle(claims, granted, backend)
                return urlencode(query)
            raise Denied(403, "forbidden", "System-level interactions are not available")
        rtype = parts[0]
        if not rtype[:1].isupper():
            raise Denied(403, "forbidden", "Operations are not available through this proxy")
        if method == "GET":
            perm = "s" if len(parts) == 1 or parts[1] == "_search" else "r"
        elif method == "POST":
            perm = "s" if len(parts) == 2 and parts[1] == "_search" else "c"
        elif method in ("PUT", "PATCH"):
            perm = "u"
        else:
            perm = "d"
        if perm == "s" and method == "POST":
            query += parse_qsl(request.get_data(as_text=True))
        decision = sc.check(granted, rtype, perm, allow_system=backend)
        if not decision.allowed:
            raise Denied(403, "forbidden", f"The token's scopes do not allow {perm} on {rtype}")
        if decision.compartment:
            query = self._compartment(rtype, parts, perm, query, claims)
        return urlencode(query)

    def _compartment(self, rtype: str, parts: list[str], perm: str, query: list[tuple[str, str]],
                     claims: dict[str, Any]) -> list[tuple[str, str]]:
        patient = claims.get("patient")
        if not patient:
            raise Denied(403, "forbidden", "patient/ scopes need a patient in context")
        if perm == "s":
            param = PATIENT_PARAM.get(rtype)
            names = {"patient", "subject", "_id", "patient:Patient", "subject:Patient"}
            given = [v for k, v in query if k in names]
            if any(_patient_id(v) != patient for v in given):
                raise Denied(403, "forbidden", "The search names another patient")
            if not given:
                if param is None:
                    raise Denied(403, "forbidden", f"{rtype} cannot be limited to the patient in context")
                query.append((param, patient))
            return query
        if perm in ("c", "u") and request.get_data():
            try:
                body = json.loads(request.get_data())
            except ValueError:
                raise Denied(400, "invalid", "The body is not JSON") from None
            if patients_of(body) - {patient}:
                raise Denied(403, "forbidden", "The resource belongs to another patient")
        if len(parts) >= 2 and perm in ("r", "u", "d"):
            resp = self.http.get(f"{self.upstream}/{rtype}/{parts[1]}", timeout=30,
                                 headers={"Accept": "application/fhir+json"})
            if resp.ok and patients_of(resp.json()) - {patient}:
                raise Denied(403, "forbidden", "The resource belongs to another patient")
        return query

    def _check_bundle(self, claims: dict[str, Any], granted: list[str], backend: bool) -> None:
        """Every entry of a transaction/batch must be allowed on its own."""
        try:
            bundle = json.loads(request.get_data() or b"{}")
        except ValueError:
            raise Denied(400, "invalid", "The body is not JSON") from None
        if bundle.get("resourceType") != "Bundle":
            raise Denied(400, "invalid", "POST to the base needs a Bundle")
        perms = {"GET": "r", "POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}
        for entry in bundle.get("entry") or []:
            req = entry.get("request") or {}
            url = str(req.get("url", "")).split("?")[0]
            rtype = url.split("/")[0] or str((entry.get("resource") or {}).get("resourceType", ""))
            perm = perms.get(str(req.get("method", "")).upper(), "?")
            if perm == "r" and "/" not in url:
                perm = "s"
            decision = sc.check(granted, rtype, perm, allow_system=backend)
            if not decision.allowed:
                raise Denied(403, "forbidden", f"The token's scopes do not allow {perm} on {rtype}")
            if decision.compartment:
                res = entry.get("resource") or {}
                if not claims.get("patient") or patients_of(res) - {claims.get("patient")}:
                    raise Denied(403, "forbidden", "A bundle entry belongs to another patient")

    # ------------------------------------------------------------------
    def forward(self, path: str, query: str, claims: dict[str, Any] | None = None) -> Response:
        url = f"{self.upstream}/{path}" if path else self.upstream
        if query:
            url += "?" + query
        headers = {h: request.headers[h] for h in FORWARD_REQUEST if h in request.headers}
        body = request.get_data() if request.method in ("POST", "PUT", "PATCH") else None
        if body and request.method == "POST" and path.endswith("_search"):
            body = None  # parameters were merged into the query string
            headers.pop("Content-Type", None)
        upstream = self.http.request(request.method, url, data=body, headers=headers, timeout=120)
        content = upstream.content.replace(self.upstream.encode(), self.public.encode())
        if claims is not None and claims.get("patient") and path and request.method == "GET":
            content = self._filter_bundle(content, claims)
        resp = Response(content, status=upstream.status_code)
        for h in FORWARD_RESPONSE:
            if h in upstream.headers:
                resp.headers[h] = upstream.headers[h].replace(self.upstream, self.public)
        return resp

    def _metadata(self, resp: Response) -> Response:
        """Declare SMART on the CapabilityStatement (SMART 2.2.0 "Conformance", oauth-uris)."""
        try:
            cap = json.loads(resp.get_data())
        except ValueError:
            return resp
        if not isinstance(cap, dict) or cap.get("resourceType") != "CapabilityStatement":
            return resp
        base = self.public[: -len("/fhir")]
        security = {
            "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                     "code": "SMART-on-FHIR"}]}],
            "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                           "extension": [{"url": "authorize", "valueUri": base + "/auth/authorize"},
                                         {"url": "token", "valueUri": base + "/auth/token"}]}]}
        for rest in cap.get("rest") or []:
            rest["security"] = security
        resp.set_data(json.dumps(cap).encode())
        return resp

    def _filter_bundle(self, content: bytes, claims: dict[str, Any]) -> bytes:
        """Defence in depth: drop searchset entries of other patients (e.g. via _include)."""
        granted = sc.split(claims.get("scope"))
        try:
            doc = json.loads(content)
        except ValueError:
            return content
        if not isinstance(doc, dict) or doc.get("type") != "searchset":
            return content
        keep = []
        for entry in doc.get("entry") or []:
            res = entry.get("resource") or {}
            d = sc.check(granted, str(res.get("resourceType")), "r", allow_system=False)
            if d.allowed and (not d.compartment or not (patients_of(res) - {claims["patient"]})):
                keep.append(entry)
        if len(keep) == len(doc.get("entry") or []):
            return content
        doc["entry"] = keep
        return json.dumps(doc).encode()
