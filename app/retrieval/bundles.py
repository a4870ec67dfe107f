"""A read-only stand-in for ``FhirClient`` over FHIR transaction bundles on disk.

The retrieval-quality test, the benchmark and offline evaluation build charts
from ``synthetic_data/bundles`` without a server: the indexer only needs
``read``, ``search`` (by ``patient``) and ``fetch_limited`` (Binary by
relative url), which this class answers from memory. It is not a FHIR server:
no paging, no other search parameters, nothing written.

Like a server processing a transaction, it resolves ``urn:uuid:`` references between the
entries of a bundle to ``Type/id`` (Synthea-style bundles reference the patient by its
``fullUrl``), so that a search by patient finds them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from app.errors import FhirError

_PATIENT_REF = {"Condition": "subject", "DocumentReference": "subject", "Encounter": "subject",
                "MedicationRequest": "subject"}


def _resolve(node: Any, local: dict[str, str]) -> None:
    """Rewrite ``{"reference": "urn:uuid:..."}`` to the entry's ``Type/id``, in place."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in local:
            node["reference"] = local[ref]
        for value in node.values():
            if isinstance(value, dict | list):
                _resolve(value, local)
    elif isinstance(node, list):
        for value in node:
            _resolve(value, local)


class BundleClient:
    """Resources of one or more bundles, addressable like a FHIR server's (read-only)."""

    base_url = "bundle://local/fhir"

    def __init__(self, resources: Iterable[dict]) -> None:
        self._by_key: dict[tuple[str, str], dict] = {}
        for res in resources:
            if isinstance(res, dict) and res.get("resourceType") and res.get("id"):
                self._by_key[(res["resourceType"], res["id"])] = res
        self.reads = 0  # calls answered, for tests and benchmarks

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> BundleClient:
        resources: list[dict] = []
        for path in paths:
            bundle = json.loads(Path(path).read_text(encoding="utf-8"))
            entries = [e for e in bundle.get("entry") or []
                       if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
            local = {e["fullUrl"]: f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}"
                     for e in entries if isinstance(e.get("fullUrl"), str) and e["fullUrl"].startswith("urn:uuid:")
                     and e["resource"].get("id")}
            for e in entries:
                if local:
                    _resolve(e["resource"], local)
                resources.append(e["resource"])
        return cls(resources)

    @classmethod
    def from_dir(cls, directory: str | Path) -> BundleClient:
        return cls.from_paths(sorted(Path(directory).glob("*.json")))

    def patients(self) -> list[str]:
        return sorted(rid for (rtype, rid) in self._by_key if rtype == "Patient")

    def read(self, resource_type: str, rid: str, *, no_cache: bool = False) -> dict:
        self.reads += 1
        try:
            return self._by_key[(resource_type, rid)]
        except KeyError:
            raise FhirError(f"{resource_type} not found.", status=404) from None

    def search(self, resource_type: str, params: dict[str, Any] | None = None, **_: Any,
               ) -> Iterator[dict]:
        self.reads += 1
        patient = (params or {}).get("patient")
        field = _PATIENT_REF.get(resource_type)
        for (rtype, _rid), res in sorted(self._by_key.items()):
            if rtype != resource_type:
                continue
            if patient is not None:
                ref = (res.get(field) or {}).get("reference") if field else None
                if ref not in (f"Patient/{patient}", patient):
                    continue
            yield res

    def fetch_limited(self, url: str, *, accept: str, max_bytes: int,
                      ) -> tuple[bytes | None, str | None, str]:
        """A ``Binary/<id>`` from the bundles as FHIR JSON; other urls are refused."""
        self.reads += 1
        parts = url.strip("/").split("/")
        if len(parts) != 2 or (parts[0], parts[1]) not in self._by_key:
            return None, "foreign_url" if "://" in url else "not_found", ""
        body = json.dumps(self._by_key[(parts[0], parts[1])]).encode()
        if len(body) > max_bytes:
            return None, "too_large", ""
        return body, None, "application/fhir+json"
