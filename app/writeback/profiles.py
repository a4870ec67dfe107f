"""Check a resource against a differential StructureDefinition from ``fhir_profiles/``.

A small checker, not a FHIR validator: it reads the ``differential`` of the
app's own profiles and enforces what they say about cardinality and codes.
https://hl7.org/fhir/R4/elementdefinition.html and
https://hl7.org/fhir/R4/profiling.html#slicing

- ``min`` / ``max`` per parent instance (``max: "0"`` prohibits an element);
- ``fixed[x]`` (exact value) and ``pattern[x]`` (the value contains the
  pattern: every pattern key present and equal, every pattern list item
  matched by some item) on every instance of the element;
- slices (``path:name``) with ``value`` or ``pattern`` discriminators, on
  ``$this`` or a child path; the slice's own min/max count the matching items.

Base-resource constraints (types, value sets, invariants) are left to
``fhir.resources`` and ``fhirclient``, which the tests run as well. Messages
name element ids and counts, never values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["PROFILES_DIR", "check", "load_profile", "matches_pattern", "profile_for"]

PROFILES_DIR = Path(__file__).resolve().parents[2] / "fhir_profiles"


@cache
def load_profile(profile_id: str) -> dict[str, Any]:
    """``fhir_profiles/StructureDefinition-<id>.json`` (source tree only; not packaged)."""
    path = PROFILES_DIR / f"StructureDefinition-{profile_id}.json"
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def profile_for(resource: dict[str, Any]) -> str:
    """The app profile a resource it wrote should meet (review Provenances by their tag)."""
    rtype = resource.get("resourceType")
    if rtype == "Provenance":
        tags = (resource.get("meta") or {}).get("tag") or []
        if any(t.get("system") == "urn:smart-draft-agent:review" for t in tags):
            return "review-provenance"
        return "ai-provenance"
    return {"DocumentReference": "ai-draft-documentreference", "Device": "ai-device",
            "AuditEvent": "app-auditevent"}[str(rtype)]


def matches_pattern(value: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(matches_pattern(value.get(k), p)
                                               for k, p in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(matches_pattern(v, p) for v in value)
                                               for p in pattern)
    return bool(value == pattern)


def _children(parent: Any, name: str) -> list[Any]:
    if not isinstance(parent, dict):
        return []
    value = parent.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _walk(items: Iterable[Any], dotted: str) -> list[Any]:
    out = list(items)
    for name in dotted.split("."):
        out = [child for item in out for child in _children(item, name)]
    return out


def _value_constraint(element: dict[str, Any]) -> tuple[str, str, Any] | None:
    for key, value in element.items():
        if key.startswith("fixed"):
            return "fixed", key, value
        if key.startswith("pattern"):
            return "pattern", key, value
    return None


def _satisfies(value: Any, constraint: tuple[str, str, Any]) -> bool:
    kind, _key, expected = constraint
    return bool(value == expected) if kind == "fixed" else matches_pattern(value, expected)


class _Differential:
    def __init__(self, sd: dict[str, Any]) -> None:
        self.sd = sd
        self.elements: list[dict[str, Any]] = sd["differential"]["element"]
        self.by_id = {e["id"]: e for e in self.elements}

    def in_slice(self, item: Any, sliced_id: str, slice_name: str) -> bool:
        sliced = self.by_id.get(sliced_id) or {}
        discriminators = (sliced.get("slicing") or {}).get("discriminator") or []
        if not discriminators:
            raise ValueError(f"{sliced_id} has slices but no slicing.discriminator")
        for disc in discriminators:
            path = disc["path"]
            slice_id = f"{sliced_id}:{slice_name}"
            element = self.by_id.get(slice_id if path == "$this" else f"{slice_id}.{path}")
            constraint = _value_constraint(element or {})
            if constraint is None:
                raise ValueError(f"slice {slice_id} has no value for discriminator {path}")
            values = [item] if path == "$this" else _walk([item], path)
            if not any(_satisfies(v, constraint) for v in values):
                return False
        return True

    def instances(self, resource: dict[str, Any], segments: list[str]) -> list[Any]:
        """Instances at the element id ``Type.seg1.seg2:slice...`` (segments after the type)."""
        items: list[Any] = [resource]
        prefix = self.sd["type"]
        for segment in segments:
            name, _, slice_name = segment.partition(":")
            items = [child for item in items for child in _children(item, name)]
            sliced_id = f"{prefix}.{name}"
            if slice_name:
                items = [i for i in items if self.in_slice(i, sliced_id, slice_name)]
            prefix = f"{sliced_id}:{slice_name}" if slice_name else sliced_id
        return items

    def check(self, resource: dict[str, Any]) -> list[str]:
        if resource.get("resourceType") != self.sd["type"]:
            return [f"resourceType is not {self.sd['type']}"]
        errors: list[str] = []
        for element in self.elements:
            segments = element["id"].split(".")[1:]
            if not segments:
                continue
            parents = self.instances(resource, segments[:-1])
            for parent in parents:
                items = self._items(parent, segments)
                lo = int(element.get("min", 0))
                hi = element.get("max", "*")
                if len(items) < lo:
                    errors.append(f"{element['id']}: {len(items)} found, at least {lo} required")
                if hi != "*" and len(items) > int(hi):
                    errors.append(f"{element['id']}: {len(items)} found, at most {hi} allowed")
                constraint = _value_constraint(element)
                if constraint is not None:
                    bad = sum(1 for item in items if not _satisfies(item, constraint))
                    if bad:
                        errors.append(f"{element['id']}: {bad} value(s) do not match {constraint[1]}")
        return errors

    def _items(self, parent: Any, segments: list[str]) -> list[Any]:
        name, _, slice_name = segments[-1].partition(":")
        items = _children(parent, name)
        if slice_name:
            sliced_id = ".".join([self.sd["type"], *segments[:-1], name])
            items = [i for i in items if self.in_slice(i, sliced_id, slice_name)]
        return items


def check(resource: dict[str, Any], profile: str | dict[str, Any] | None = None) -> list[str]:
    """Violations of ``profile`` (an id in ``fhir_profiles/`` or a StructureDefinition) by
    ``resource``; an empty list when it conforms. Without ``profile``: ``profile_for``."""
    sd = profile if isinstance(profile, dict) else load_profile(profile or profile_for(resource))
    return _Differential(sd).check(resource)
