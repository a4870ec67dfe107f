"""A FHIR client that records every read, search, create, update and transaction in the trail.

IHE BALP 1.1 (https://profiles.ihe.net/ITI/BALP/content.html): reads are
PatientRead (action R, subtype read/vread), searches PatientQuery (action E,
subtype search-type, the query as parameter *names* plus the patient, never
values that could be free text), creates C, updates U, transactions E with
subtype transaction. Failures are recorded too (outcome 4 for a refusal, 8 for
a server failure) and the error re-raised. The audit record never holds a
response body, a token (only its ``jti``) or note text.

This is the one audit layer of FHIR interactions: each interaction is recorded
exactly once, in a ``finally`` — a search the caller stops early (the
generator is closed), a failure, or any other exception included. Services add
only what the client cannot know (the model call; docs/operations.md lists how
many AuditEvents each user action makes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from app.audit.trail import AuditTrail
from app.errors import AppError, FatalUpstreamError, UpstreamError
from app.fhir.client import FhirClient

__all__ = ["AuditedFhirClient"]

_PATIENT_PARAMS = ("patient", "subject")


def _outcome(exc: UpstreamError) -> str:
    return "4" if isinstance(exc, FatalUpstreamError) else "8"


def _patient_of(resource: dict | None) -> str | None:
    if not isinstance(resource, dict):
        return None
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id")) or None
    ref = ((resource.get("subject") or resource.get("patient") or {}).get("reference") or "")
    return ref.split("/")[1] if ref.startswith("Patient/") and ref.count("/") >= 1 else None


class AuditedFhirClient(FhirClient):
    """``FhirClient`` plus one audit entry per interaction (see the module docstring)."""

    def __init__(self, base_url: str, tokens: Any = None, *, trail: AuditTrail, client_id: str,
                 user_reference: str | None = None, patient_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(base_url, tokens, **kwargs)
        self.trail = trail
        self.client_id = client_id
        self.user_reference = user_reference
        self.patient_id = patient_id

    def _record(self, action: str, subtype: str, outcome: str, refs: list[str],
                patient: str | None, query: str | None = None) -> None:
        self.trail.record(action=action, subtype=subtype, outcome=outcome,
                          user_reference=self.user_reference, client_id=self.client_id,
                          token_jti=self.tokens.jti, entity_references=refs,
                          patient_id=patient or self.patient_id, destination=self.base_url,
                          query=query)

    def _audited(self, action: str, subtype: str, refs: list[str], call: Callable[[], dict],
                 patient: str | None = None) -> dict:
        outcome, out = "8", None
        try:
            out = call()
            outcome = "0"
            return out
        except UpstreamError as exc:
            outcome = _outcome(exc)
            raise
        except AppError:  # refused before it was sent (invalid resource, session ended)
            outcome = "4"
            raise
        finally:
            if out is not None:
                written = [f"{out['resourceType']}/{out['id']}"] if out.get("id") and not refs else refs
                self._record(action, subtype, outcome, written, patient or _patient_of(out))
            else:
                self._record(action, subtype, outcome, refs, patient)

    def read(self, resource_type: str, rid: str, *, no_cache: bool = False) -> dict:
        return self._audited("R", "read", [f"{resource_type}/{rid}"],
                             lambda: super(AuditedFhirClient, self).read(resource_type, rid,
                                                                         no_cache=no_cache))

    def vread(self, resource_type: str, rid: str, version: str) -> dict:
        return self._audited("R", "vread", [f"{resource_type}/{rid}/_history/{version}"],
                             lambda: super(AuditedFhirClient, self).vread(resource_type, rid, version))

    def search(self, resource_type: str, params: dict[str, Any] | None = None, *,
               max_pages: int = 50, no_cache: bool = False, validate: bool = False) -> Iterator[dict]:
        params = params or {}
        names = "&".join(sorted(params))
        query = f"{resource_type}?{names}" if names else resource_type
        patient = next((str(params[p]).split("/")[-1] for p in _PATIENT_PARAMS if p in params), None)
        outcome = "8"
        try:
            yield from super().search(resource_type, params, max_pages=max_pages, no_cache=no_cache,
                                      validate=validate)
            outcome = "0"
        except GeneratorExit:  # the caller stopped early (found what it wanted): a successful query
            outcome = "0"
            raise
        except UpstreamError as exc:
            outcome = _outcome(exc)
            raise
        except AppError:
            outcome = "4"
            raise
        finally:
            self._record("E", "search-type", outcome, [], patient, query)

    def create(self, resource: dict, *, if_none_exist: str | None = None) -> dict:
        return self._audited("C", "create", [], lambda: super(AuditedFhirClient, self).create(
            resource, if_none_exist=if_none_exist), _patient_of(resource))

    def update(self, resource: dict, *, if_match: str | None = None) -> dict:
        ref = f"{resource['resourceType']}/{resource.get('id')}"
        return self._audited("U", "update", [ref], lambda: super(AuditedFhirClient, self).update(
            resource, if_match=if_match), _patient_of(resource))

    def transaction(self, bundle: dict) -> dict:
        patient = next((p for e in bundle.get("entry") or [] if (p := _patient_of(e.get("resource")))), None)
        outcome: str | None = "8"
        try:
            out = super().transaction(bundle)
            outcome = None  # recorded below, with the ids written
        except UpstreamError as exc:
            outcome = _outcome(exc)
            raise
        except AppError:
            outcome = "4"
            raise
        finally:
            if outcome is not None:
                self._record("E", "transaction", outcome, [], patient)
        refs = []
        for entry in out.get("entry") or []:
            location = ((entry.get("response") or {}).get("location") or "").split("?")[0]
            parts = [p for p in location.split("/") if p]
            if "_history" in parts:
                parts = parts[:parts.index("_history")]
            if len(parts) >= 2:
                refs.append("/".join(parts[-2:]))
        self._record("E", "transaction", "0", refs, patient)
        return out
