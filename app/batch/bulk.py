"""FHIR Bulk Data Access v2 (STU2) client: kick-off, status polling, manifest, NDJSON files.

https://hl7.org/fhir/uv/bulkdata/STU2/export.html

- Kick-off ``GET [base]/Group/<id>/$export`` (or ``Patient/$export``) with
  ``Prefer: respond-async`` and ``Accept: application/fhir+json``; 202 + ``Content-Location``.
  ``_type``, ``_since`` and ``_typeFilter`` are sent; ``_since`` and ``_typeFilter`` are applied
  again locally (``LocalFilter``): servers may ignore them.
- Polling honours ``Retry-After`` (seconds or an HTTP date), capped at ``max_retry_after_s``
  (vendors ask for hours); without it, exponential backoff. ``X-Progress`` goes to ``on_progress``.
  429 waits likewise. A transient failure (5xx, or an OperationOutcome with code ``transient``)
  is retried up to ``max_transient`` times in a row; any other 4xx/5xx is a failed job.
- The manifest's ``requiresAccessToken`` decides whether files are fetched with the token; the
  token is only ever sent inside the FHIR base (``FhirClient.inside_base``), so a redirect to
  another host never carries it. Files are streamed line by line, never read whole.
- Error NDJSON (``manifest.error``) is read after the output files; issues of severity
  ``fatal`` or ``error`` fail the export (``BulkJobFailed``) once every file was read.
- A file that answers 404/410 has expired: ``BulkFileExpired``; the caller re-polls the status
  URL for a fresh manifest, then starts a new export.
- ``DELETE`` of the status URL when done (Epic allows one export per client and group).
- Every request goes through ``FhirClient.request`` (bearer token, 401 → re-authorise once:
  SMART Backend Services tokens last minutes, an export can last hours).

``sleep`` and ``clock`` are injectable so tests do not wait.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

import requests

from app.errors import AppError, ConfigError, FatalUpstreamError, TemporaryUpstreamError, UpstreamError
from app.fhir.client import FhirClient
from app.logging import event

log = logging.getLogger(__name__)
NDJSON = "application/fhir+ndjson"
MAX_LINE_BYTES = 64 * 1024 * 1024  # one resource per line; a larger line is refused


class BulkNotSupported(AppError):
    """The server offers no ``$export`` here (404/405/501 at kick-off): use paged search."""

    code = "bulk_not_supported"


class BulkJobFailed(FatalUpstreamError):
    code = "bulk_failed"


class BulkFileExpired(UpstreamError):
    code = "bulk_file_expired"


class BulkStatusGone(UpstreamError):
    """The status URL is unknown to the server (the job was deleted or expired)."""

    code = "bulk_status_gone"


@dataclass(frozen=True)
class ExportSpec:
    """What to export: ``group_id`` None means ``Patient/$export``."""

    group_id: str | None = None
    types: tuple[str, ...] = ("Patient", "Condition", "DocumentReference")
    since: str | None = None
    type_filters: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return f"Group/{self.group_id}/$export" if self.group_id else "Patient/$export"

    def params(self) -> dict[str, str]:
        out = {"_type": ",".join(self.types)}
        if self.since:
            out["_since"] = self.since
        if self.type_filters:
            out["_typeFilter"] = ",".join(self.type_filters)
        return out


@dataclass
class Manifest:
    transaction_time: str | None
    requires_access_token: bool
    output: list[dict] = field(default_factory=list)
    error: list[dict] = field(default_factory=list)

    @classmethod
    def parse(cls, body: Any) -> Manifest:
        if not isinstance(body, dict) or not isinstance(body.get("output"), list):
            raise FatalUpstreamError("The bulk export manifest is malformed.", code="bulk_manifest_malformed")
        def entries(key: str) -> list[dict]:
            return [e for e in body.get(key) or [] if isinstance(e, dict) and isinstance(e.get("url"), str)]
        return cls(transaction_time=body.get("transactionTime"),
                   requires_access_token=bool(body.get("requiresAccessToken", True)),
                   output=entries("output"), error=entries("error"))


# ---- local re-filtering (_since, _typeFilter) ---------------------------------------------------

_DATE_PREFIXES = ("ge", "le", "gt", "lt", "eq")
_SUPPORTED_FILTER_PARAMS = {"date", "_lastUpdated", "status", "type", "category", "code", "clinical-status"}


def _dates(resource: dict, param: str) -> list[str]:
    if param == "_lastUpdated":
        value = (resource.get("meta") or {}).get("lastUpdated")
        return [value] if isinstance(value, str) else []
    for key in ("date", "recordedDate", "onsetDateTime", "effectiveDateTime", "authoredOn"):
        if isinstance(resource.get(key), str):
            return [resource[key]]
    return []


def _tokens(resource: dict, param: str) -> list[tuple[str | None, str]]:
    key = {"clinical-status": "clinicalStatus"}.get(param, param)
    value = resource.get(key)
    if param == "status":
        return [(None, value)] if isinstance(value, str) else []
    concepts = value if isinstance(value, list) else [value]
    out = []
    for concept in concepts:
        for c in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(c, dict) and isinstance(c.get("code"), str):
                out.append((c.get("system"), c["code"]))
    return out


def _date_match(values: list[str], expr: str) -> bool:
    prefix, when = ("eq", expr)
    if expr[:2] in _DATE_PREFIXES:
        prefix, when = expr[:2], expr[2:]
    for v in values:
        a, b = v[: len(when)], when
        if (prefix == "eq" and a == b) or (prefix == "ge" and a >= b) or (prefix == "le" and a <= b) or \
                (prefix == "gt" and a > b) or (prefix == "lt" and a < b):
            return True
    return False


def _token_match(values: list[tuple[str | None, str]], expr: str) -> bool:
    wanted = []
    for alt in expr.split(","):
        system, _, code = alt.rpartition("|") if "|" in alt else (None, "", alt)
        wanted.append((system or None, code))
    return any(code == wc and (ws is None or system == ws) for system, code in values for ws, wc in wanted)


@dataclass
class LocalFilter:
    """``_since`` and ``_typeFilter`` applied on our side (a server may ignore either).

    Supported ``_typeFilter`` parameters: ``date`` and ``_lastUpdated`` (prefixes ge/le/gt/lt/eq),
    ``status``, ``type``, ``category``, ``code``, ``clinical-status`` (token, ``system|code`` or
    ``code``, comma = or). Anything else is refused up front: a filter we cannot check again
    would let a server that ignored it widen the batch.
    """

    since: str | None = None
    filters: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)  # type -> [criteria]

    @classmethod
    def from_spec(cls, spec: ExportSpec) -> LocalFilter:
        filters: dict[str, list[list[tuple[str, str]]]] = {}
        for tf in spec.type_filters:
            rtype, _, query = tf.partition("?")
            if not rtype or not rtype[0].isupper() or not query:
                raise ConfigError(f"_typeFilter must look like Type?param=value (got {tf[:60]!r}).")
            criteria = parse_qsl(query, keep_blank_values=True)
            unknown = sorted({k.split(":")[0] for k, _ in criteria} - _SUPPORTED_FILTER_PARAMS)
            if unknown:
                raise ConfigError(f"_typeFilter parameter(s) {unknown} cannot be checked locally; supported: "
                                  f"{sorted(_SUPPORTED_FILTER_PARAMS)}.")
            filters.setdefault(rtype, []).append(criteria)
        return cls(since=spec.since, filters=filters)

    def keep(self, resource: dict) -> bool:
        if self.since:
            updated = (resource.get("meta") or {}).get("lastUpdated")
            if isinstance(updated, str) and updated < self.since:
                return False
        alternatives = self.filters.get(str(resource.get("resourceType")))
        if not alternatives:
            return True
        return any(all(self._one(resource, k.split(":")[0], v) for k, v in criteria)
                   for criteria in alternatives)  # several _typeFilter for one type: or

    @staticmethod
    def _one(resource: dict, param: str, value: str) -> bool:
        if param in ("date", "_lastUpdated"):
            return _date_match(_dates(resource, param), value)
        return _token_match(_tokens(resource, param), value)


# ---- the client ---------------------------------------------------------------------------------

def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _issue_codes(resp: requests.Response) -> list[str]:
    try:
        body = resp.json()
    except ValueError:
        return []
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return []
    return [str(i.get("code")) for i in body.get("issue") or [] if isinstance(i, dict)]


class BulkClient:
    def __init__(self, client: FhirClient, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, max_retry_after_s: float = 300.0,
                 max_wait_s: float = 24 * 3600.0, max_transient: int = 8, backoff_s: float = 1.0,
                 on_progress: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.sleep, self.clock = sleep, clock
        self.max_retry_after_s = max_retry_after_s
        self.max_wait_s = max_wait_s
        self.max_transient = max_transient
        self.backoff_s = backoff_s
        self.on_progress = on_progress
        self.polls = 0
        self.waited_s = 0.0
        self.deleted: list[str] = []

    # ---- plumbing -------------------------------------------------------------------------------
    def _get(self, url: str, *, accept: str, stream: bool = False, method: str = "GET",
             params: dict | None = None, headers: dict | None = None) -> requests.Response:
        # FhirClient.request retries by itself; bulk has its own policy, so one attempt per call
        saved = self.client.max_attempts
        self.client.max_attempts = 1
        try:
            return self.client.request(method, url, params=params, accept=accept, stream=stream, headers=headers)
        finally:
            self.client.max_attempts = saved

    def _wait(self, resp: requests.Response | None, attempt: int) -> None:
        asked = retry_after_s(resp.headers.get("Retry-After")) if resp is not None else None
        delay = asked if asked is not None else self.backoff_s * 2 ** min(attempt, 8)
        delay = min(delay, self.max_retry_after_s)
        self.waited_s += delay
        self.sleep(delay)

    @staticmethod
    def _transient(resp: requests.Response) -> bool:
        return resp.status_code in (408, 500, 502, 503, 504) or "transient" in _issue_codes(resp)

    # ---- kick-off -------------------------------------------------------------------------------
    def kickoff(self, spec: ExportSpec) -> str:
        """Start the export; returns the status URL (absolute)."""
        transient = 0
        started = self.clock()
        while True:
            try:
                resp = self._get(spec.path, accept="application/fhir+json", params=spec.params(),
                                 headers={"Prefer": "respond-async"})
            except TemporaryUpstreamError:
                transient += 1
                if transient > min(3, self.max_transient):  # nobody answers: say so soon
                    raise
                if self.on_progress:
                    self.on_progress(f"the server did not answer the kick-off; retry {transient} of 3")
                self._wait(None, transient)
                continue
            try:
                if resp.status_code == 202:
                    location = resp.headers.get("Content-Location")
                    if not location:
                        raise FatalUpstreamError("The export kick-off gave no Content-Location.",
                                                 code="bulk_no_status_url")
                    event(log, "bulk.kickoff", http_status=202)
                    return self.client.url_for(location)
                if resp.status_code in (404, 405, 501) or (resp.status_code == 400 and
                                                           "not-supported" in _issue_codes(resp)):
                    raise BulkNotSupported("The FHIR server offers no $export for this cohort.")
                if resp.status_code == 429 or self._transient(resp):
                    transient += 1
                    if transient > self.max_transient or self.clock() - started > self.max_wait_s:
                        raise TemporaryUpstreamError(
                            f"The export could not be started (HTTP {resp.status_code} after {transient} tries).",
                            code="bulk_kickoff_throttled")
                    event(log, "bulk.kickoff_wait", http_status=resp.status_code, attempt=transient)
                    self._wait(resp, transient)
                    continue
                raise BulkJobFailed(f"The export kick-off was refused (HTTP {resp.status_code}).",
                                    code="bulk_kickoff_refused")
            finally:
                resp.close()

    # ---- status ---------------------------------------------------------------------------------
    def wait(self, status_url: str) -> Manifest:
        """Poll until the manifest is ready."""
        transient = 0
        started = self.clock()
        attempt = 0
        while True:
            if self.clock() - started > self.max_wait_s:
                raise TemporaryUpstreamError("The export did not finish in time; resume later from its status URL.",
                                             code="bulk_timeout")
            try:
                resp = self._get(status_url, accept="application/json")
            except TemporaryUpstreamError:
                transient += 1
                if transient > self.max_transient:
                    raise
                self._wait(None, transient)
                continue
            self.polls += 1
            try:
                if resp.status_code == 200:
                    try:
                        return Manifest.parse(resp.json())
                    except ValueError:
                        raise FatalUpstreamError("The bulk export manifest is not JSON.",
                                                 code="bulk_manifest_malformed") from None
                if resp.status_code == 202:
                    transient = 0
                    attempt += 1
                    progress = resp.headers.get("X-Progress")
                    if progress and self.on_progress:
                        self.on_progress(progress[:100])
                    self._wait(resp, attempt)
                    continue
                if resp.status_code == 429 or self._transient(resp):
                    transient += 1
                    if transient > self.max_transient:
                        raise TemporaryUpstreamError(
                            f"The export status kept failing (HTTP {resp.status_code}).", code="bulk_status_failing")
                    self._wait(resp, transient)
                    continue
                if resp.status_code in (404, 410):
                    raise BulkStatusGone("The export is no longer known to the server.")
                raise BulkJobFailed(f"The export failed on the server (HTTP {resp.status_code}).")
            finally:
                resp.close()

    def delete(self, status_url: str) -> None:
        """End the job on the server; a failure here is logged, not raised (the data is in)."""
        try:
            resp = self._get(status_url, accept="application/fhir+json", method="DELETE")
            resp.close()
            self.deleted.append(status_url)
            event(log, "bulk.deleted", http_status=resp.status_code)
        except UpstreamError as exc:
            event(log, "bulk.delete_failed", error_code=exc.code)

    # ---- files ----------------------------------------------------------------------------------
    def lines(self, url: str, *, requires_token: bool) -> Iterator[dict]:
        """Resources of one NDJSON file, streamed. Transient failures before the first line retry."""
        target = self.client.url_for(url)
        if requires_token and not self.client.inside_base(target):
            raise FatalUpstreamError("An export file that needs the token is outside the FHIR base; not fetched.",
                                     code="bulk_file_foreign")
        transient = 0
        while True:
            resp = self._get(target, accept=NDJSON, stream=True)
            if resp.status_code == 200:
                break
            resp.close()
            if resp.status_code in (404, 410):
                raise BulkFileExpired("An export file has expired.")
            if resp.status_code == 429 or self._transient(resp):
                transient += 1
                if transient > self.max_transient:
                    raise TemporaryUpstreamError(f"An export file kept failing (HTTP {resp.status_code}).",
                                                 code="bulk_file_failing")
                self._wait(resp, transient)
                continue
            raise BulkJobFailed(f"An export file was refused (HTTP {resp.status_code}).", code="bulk_file_refused")
        try:
            for raw in resp.iter_lines(chunk_size=64 * 1024):
                if not raw or not raw.strip():
                    continue
                if len(raw) > MAX_LINE_BYTES:
                    raise FatalUpstreamError("An export line is too large.", code="bulk_line_too_large")
                try:
                    res = json.loads(raw)
                except ValueError:
                    raise FatalUpstreamError("An export file holds a line that is not JSON.",
                                             code="bulk_ndjson_malformed") from None
                if isinstance(res, dict):
                    yield res
        except requests.RequestException:
            raise TemporaryUpstreamError("An export file download broke off.", code="bulk_file_broken") from None
        finally:
            resp.close()

    def error_issues(self, manifest: Manifest) -> list[tuple[str, str]]:
        """(severity, code) of every issue in the error files; never their diagnostics (may hold PHI)."""
        found: list[tuple[str, str]] = []
        for entry in manifest.error:
            for res in self.lines(entry["url"], requires_token=manifest.requires_access_token):
                for issue in res.get("issue") or []:
                    if isinstance(issue, dict):
                        found.append((str(issue.get("severity", ""))[:20], str(issue.get("code", ""))[:40]))
        return found


def export_resources(bulk: BulkClient, spec: ExportSpec, *, status_url: str | None = None,
                     on_status_url: Callable[[str | None], None] | None = None,
                     max_restarts: int = 1) -> Iterator[dict]:
    """Every exported resource (re-filtered locally), then the job is deleted.

    ``status_url``: resume a job started earlier (kept by ``on_status_url``). Expired files:
    the status URL is polled again for a fresh manifest; if files are still gone, a new export
    starts (at most ``max_restarts`` times) and its files are read from the start; consumers
    must be idempotent per resource (the spool keys on type and id). Raises ``BulkJobFailed``
    after every file was read when the error files hold a fatal or error issue.
    """
    local = LocalFilter.from_spec(spec)
    wanted = set(spec.types)
    restarts = 0
    refreshed = False
    while True:
        if status_url is None:
            status_url = bulk.kickoff(spec)
            if on_status_url:
                on_status_url(status_url)
        try:
            manifest = bulk.wait(status_url)
        except BulkStatusGone:
            if restarts >= max_restarts:
                raise
            restarts += 1
            status_url = None
            continue
        try:
            for entry in manifest.output:
                if entry.get("type") and entry["type"] not in wanted:
                    continue
                for res in bulk.lines(entry["url"], requires_token=manifest.requires_access_token):
                    if res.get("resourceType") in wanted and local.keep(res):
                        yield res
            issues = bulk.error_issues(manifest)
        except BulkFileExpired:
            if not refreshed:
                refreshed = True  # some servers sign file URLs: a new manifest may have fresh ones
                continue
            if restarts >= max_restarts:
                raise
            event(log, "bulk.restart", error_code="bulk_file_expired")
            restarts += 1
            refreshed = False
            bulk.delete(status_url)
            status_url = None
            if on_status_url:
                on_status_url(None)
            continue
        bulk.delete(status_url)
        if on_status_url:
            on_status_url(None)
        bad = [(s, c) for s, c in issues if s in ("fatal", "error")]
        if bad:
            codes = ", ".join(sorted({c for _, c in bad}))
            raise BulkJobFailed(f"The export reported {len(bad)} error issue(s) ({codes}"
                                "); the data read so far was kept.", code="bulk_error_issues")
        return
