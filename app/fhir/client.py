"""FHIR R4 REST client over one requests Session.

https://hl7.org/fhir/R4/http.html

- Retries follow the app's one policy (``app.retry``): 408, 429, 500, 502,
  503, 504 and connection errors, exponential backoff with jitter,
  ``Retry-After`` honoured up to a cap, all within ``total_timeout``; only for
  idempotent methods, conditional creates (``If-None-Exist``) and transactions
  whose every create is conditional. A plain POST is sent once; a connection
  that failed before anything was sent is retried for any method.
- On 401 the token provider is asked once to refresh, then the call is retried.
- Searches follow the server's ``next`` links verbatim (a loop is detected).
- The bearer token is only ever sent to URLs inside the FHIR base.
- Errors never carry a response body: ``FhirError`` keeps status + issue codes.
- Strict on write (R4B validation before sending), lenient on read (``validate=True``
  skips and counts invalid resources).
- Attachments are streamed under a byte cap (``fetch_limited``).
"""

from __future__ import annotations

import logging
import posixpath
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import requests

from app.errors import FatalUpstreamError, FhirError, TemporaryUpstreamError
from app.fhir.validation import is_valid, validate_for_write
from app.retry import RETRYABLE, Policy, not_sent, retry_safe

log = logging.getLogger(__name__)
__all__ = ["FHIR_JSON", "RETRYABLE", "FhirClient", "StaticToken", "TokenProvider"]
FHIR_JSON = "application/fhir+json"
_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class TokenProvider:
    """Gives the current bearer token; ``refresh()`` renews it (once per 401)."""

    def token(self) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError

    def refresh(self) -> bool:  # pragma: no cover - interface
        return False

    @property
    def jti(self) -> str | None:
        return None


class StaticToken(TokenProvider):
    def __init__(self, token: str | None) -> None:
        self._token = token

    def token(self) -> str | None:
        return self._token


def _issue_codes(resp: requests.Response) -> tuple[str, ...]:
    try:
        body = resp.json()
    except ValueError:
        return ()
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ()
    codes = []
    for issue in body.get("issue") or []:
        if isinstance(issue, dict) and isinstance(issue.get("code"), str):
            codes.append(issue["code"][:40])
    return tuple(codes[:10])


class FhirClient:
    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider | None = None,
        *,
        session: requests.Session | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        total_timeout: float = 60.0,
        max_attempts: int = 4,
        backoff_s: float = 0.5,
        on_request: Callable[[str, str, int, float], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens or StaticToken(None)
        self.session = session or requests.Session()
        self.timeout = (connect_timeout, read_timeout)
        self.total_timeout = total_timeout
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.sleep: Callable[[float], None] = lambda s: time.sleep(s)  # looked up late: tests patch it
        self.on_request = on_request
        self._origin = urlparse(self.base_url)
        self.skipped: Counter[str] = Counter()  # resources skipped on read, by reason

    # ---- URL rules -------------------------------------------------------
    def inside_base(self, url: str) -> bool:
        """True when ``url`` is under the FHIR base (same scheme, host, port and path prefix).

        Dot segments are resolved first, so ``Binary/../../admin`` is judged by where it lands;
        anything with a scheme other than the base's (``file:``, ``data:``, ``javascript:``) is out.
        """
        u = urlparse(url)
        b = self._origin
        if (u.scheme, u.netloc) != (b.scheme, b.netloc) or u.params:
            return False
        path = posixpath.normpath(u.path) if u.path else ""
        base_path = b.path.rstrip("/")
        return path == base_path or path.startswith(base_path + "/")

    def url_for(self, path_or_url: str) -> str:
        if _HAS_SCHEME.match(path_or_url):
            return path_or_url  # absolute: judged by inside_base, never rewritten
        if path_or_url.startswith("//"):
            return f"{self._origin.scheme}:{path_or_url}"  # protocol-relative: another host
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    # ---- core request ----------------------------------------------------
    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        accept: str = FHIR_JSON,
        stream: bool = False,
    ) -> requests.Response:
        url = self.url_for(path_or_url)
        send_token = self.inside_base(url)
        safe = retry_safe(method, headers, json_body)
        refreshed = False

        def send() -> requests.Response:
            nonlocal refreshed
            while True:
                hdrs = {"Accept": accept}
                if json_body is not None:
                    hdrs["Content-Type"] = FHIR_JSON
                hdrs.update(headers or {})
                token = self.tokens.token() if send_token else None
                if token:
                    hdrs["Authorization"] = f"Bearer {token}"
                started = time.monotonic()
                resp = self.session.request(method, url, params=params, json=json_body, headers=hdrs,
                                            timeout=self.timeout, stream=stream)
                if self.on_request:
                    self.on_request(method, _path_only(url), resp.status_code, (time.monotonic() - started) * 1000)
                if resp.status_code == 401 and send_token and not refreshed and self.tokens.refresh():
                    refreshed = True
                    resp.close()
                    continue
                return resp

        policy = Policy(attempts=self.max_attempts, backoff_factor=self.backoff_s, jitter=self.backoff_s,
                        sleep=self.sleep)
        try:
            return policy.run(send, status_of=lambda r: r.status_code, headers_of=lambda r: r.headers,
                              safe=safe, is_connect_error=not_sent,
                              is_transient_error=lambda e: isinstance(e, requests.RequestException),
                              on_retry=lambda r: r.close(), deadline=time.monotonic() + self.total_timeout,
                              what="fhir", method=method)
        except requests.RequestException as exc:
            kind = "timeout" if isinstance(exc, requests.Timeout) else "connection"
            raise TemporaryUpstreamError(f"The FHIR server did not answer ({kind}).", code=f"fhir_{kind}") from None

    def fetch_limited(self, url: str, *, accept: str, max_bytes: int) -> tuple[bytes | None, str | None, str]:
        """GET ``url`` (inside the base only) reading at most ``max_bytes``.

        Returns ``(body, None, content_type)`` or ``(None, reason, "")``: a body
        over the cap is abandoned as soon as it is known to be too large (from
        ``Content-Length``, else while streaming), so a 300 MB attachment costs
        at most ``max_bytes`` of memory and bandwidth.
        """
        target = self.url_for(url)
        if not self.inside_base(target):
            return None, "foreign_url", ""
        resp = self.request("GET", target, accept=accept, stream=True)
        try:
            if resp.status_code >= 400:
                return None, f"fetch_http_{resp.status_code}", ""
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                return None, "too_large", ""
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_content(chunk_size=64 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    return None, "too_large", ""
                chunks.append(chunk)
            return b"".join(chunks), None, resp.headers.get("Content-Type", "")
        except requests.RequestException:
            return None, "fetch_failed", ""
        finally:
            resp.close()

    def _check(self, resp: requests.Response, what: str, resource_type: str | None = None) -> None:
        if resp.status_code < 400:
            return
        codes = _issue_codes(resp)
        if resp.status_code in RETRYABLE:
            raise TemporaryUpstreamError(
                f"The FHIR server is temporarily unable to {what} (HTTP {resp.status_code}).",
                code="fhir_temporary",
            )
        raise FhirError(
            f"The FHIR server refused to {what}", status=resp.status_code, issue_codes=codes,
            resource_type=resource_type,
        )

    @staticmethod
    def _json(resp: requests.Response, what: str) -> dict:
        try:
            body = resp.json()
        except ValueError:
            raise FatalUpstreamError(f"The FHIR server's answer to {what} is not JSON.",
                                     code="fhir_malformed") from None
        if not isinstance(body, dict) or "resourceType" not in body:
            raise FatalUpstreamError(f"The FHIR server's answer to {what} is not a resource.", code="fhir_malformed")
        return body

    # ---- interactions ------------------------------------------------------
    def read(self, resource_type: str, rid: str, *, no_cache: bool = False) -> dict:
        headers = {"Cache-Control": "no-cache"} if no_cache else None
        resp = self.request("GET", f"{resource_type}/{rid}", headers=headers)
        self._check(resp, f"read {resource_type}", resource_type)
        return self._json(resp, f"read {resource_type}")

    def vread(self, resource_type: str, rid: str, version: str) -> dict:
        resp = self.request("GET", f"{resource_type}/{rid}/_history/{version}")
        self._check(resp, f"read a version of {resource_type}", resource_type)
        return self._json(resp, "vread")

    def search(self, resource_type: str, params: dict[str, Any] | None = None, *,
               max_pages: int = 50, no_cache: bool = False, validate: bool = False) -> Iterator[dict]:
        """Yield every entry resource, following ``next`` links verbatim.

        With ``validate``, a resource that fails R4B validation is skipped and
        counted in ``self.skipped["invalid_<type>"]`` (lenient on read).
        """
        headers = {"Cache-Control": "no-cache"} if no_cache else None
        resp = self.request("GET", resource_type, params=params, headers=headers)
        seen: set[str] = set()
        for _page in range(max_pages):
            self._check(resp, f"search {resource_type}", resource_type)
            bundle = self._json(resp, f"search {resource_type}")
            for entry in bundle.get("entry") or []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict) and (entry.get("search") or {}).get("mode", "match") == "match":
                    if validate and not is_valid(res):
                        self.skipped[f"invalid_{res.get('resourceType', 'resource')}"] += 1
                        continue
                    yield res
            nxt = next((lk.get("url") for lk in bundle.get("link") or []
                        if isinstance(lk, dict) and lk.get("relation") == "next"), None)
            if not nxt:
                return
            if nxt in seen:
                raise FatalUpstreamError("The FHIR server's paging loops.", code="fhir_paging_loop")
            seen.add(nxt)
            if not self.inside_base(nxt):
                raise FatalUpstreamError("A paging link points outside the FHIR base.", code="fhir_paging_foreign")
            resp = self.request("GET", nxt, headers=headers)
        raise FatalUpstreamError("The search returned too many pages.", code="fhir_paging_limit")

    def create(self, resource: dict, *, if_none_exist: str | None = None) -> dict:
        validate_for_write(resource)
        rtype = resource["resourceType"]
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        resp = self.request("POST", rtype, json_body=resource, headers=headers)
        self._check(resp, f"create {rtype}", rtype)
        if not resp.content:  # an empty 201 (some servers ignore Prefer): the id is in Location
            ref = _from_location(resp.headers.get("Location") or resp.headers.get("Content-Location"), rtype)
            if ref is None:
                raise TemporaryUpstreamError(f"The FHIR server did not confirm the {rtype} it created.",
                                             code="writeback_unconfirmed")
            return ref
        return self._json(resp, f"create {rtype}")

    def update(self, resource: dict, *, if_match: str | None = None) -> dict:
        validate_for_write(resource)
        rtype, rid = resource["resourceType"], resource["id"]
        headers = {"Prefer": "return=representation"}
        if if_match:
            headers["If-Match"] = if_match
        resp = self.request("PUT", f"{rtype}/{rid}", json_body=resource, headers=headers)
        self._check(resp, f"update {rtype}", rtype)
        return self._json(resp, f"update {rtype}")

    def transaction(self, bundle: dict) -> dict:
        validate_for_write(bundle)
        resp = self.request("POST", self.base_url, json_body=bundle,
                            headers={"Prefer": "return=representation"})
        self._check(resp, "process the transaction", "Bundle")
        return self._json(resp, "transaction")

    def capabilities(self) -> dict:
        resp = self.request("GET", "metadata")
        self._check(resp, "describe itself", "CapabilityStatement")
        return self._json(resp, "metadata")


def _from_location(location: str | None, rtype: str) -> dict | None:
    """``{"resourceType", "id", "meta": {"versionId"}}`` from ``.../Type/id[/_history/v]``."""
    parts = [p for p in (location or "").split("?")[0].split("/") if p]
    if rtype not in parts:
        return None
    i = len(parts) - 1 - parts[::-1].index(rtype)
    if i + 1 >= len(parts):
        return None
    out: dict = {"resourceType": rtype, "id": parts[i + 1]}
    if len(parts) > i + 3 and parts[i + 2] == "_history":
        out["meta"] = {"versionId": parts[i + 3]}
    return out


def _path_only(url: str) -> str:
    """Resource type and interaction shape of a URL, without ids or query values (for logs)."""
    parts = [p for p in urlparse(url).path.split("/") if p]
    return "/".join(parts[-2:-1] or parts[-1:])
