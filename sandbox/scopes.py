"""SMART scope algebra for the sandbox: parse, intersect, and check (pure, no I/O).

SMART App Launch 2.2.0, section "Scopes and Launch Context"
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html):

- clinical scopes ``<context>/<resource>.<permissions>`` with context
  ``patient``, ``user`` or ``system``; resource a FHIR type or ``*``;
- SMART v1 permissions ``read`` (= v2 ``rs``), ``write`` (= v2 ``cud``), ``*``
  (= ``cruds``); SMART v2 permissions an ordered subset of ``cruds``;
- v2 scopes may carry a query (``?category=...``); the sandbox does not
  implement such fine-grained scopes and grants nothing for them;
- every other scope (``launch``, ``openid``, ``offline_access`` ...) is opaque.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

V2_ORDER = "cruds"
_CLINICAL = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)$")


@dataclass(frozen=True)
class ClinicalScope:
    """One parsed clinical scope; ``perms`` is a set of v2 letters (c r u d s)."""

    context: str
    resource: str
    perms: frozenset[str]
    text: str

    def covers(self, resource: str, perm: str) -> bool:
        """True when this scope grants ``perm`` on ``resource``."""
        return (self.resource in ("*", resource)) and perm in self.perms


def _perms(spec: str) -> frozenset[str] | None:
    """Permissions of a v1 or v2 suffix; None when malformed."""
    if spec == "read":
        return frozenset("rs")
    if spec == "write":
        return frozenset("cud")
    if spec == "*":
        return frozenset(V2_ORDER)
    if spec and all(ch in V2_ORDER for ch in spec):
        # v2 requires the letters in order (c, r, u, d, s) without repeats
        if "".join(ch for ch in V2_ORDER if ch in spec) == spec:
            return frozenset(spec)
    return None


def parse_clinical(scope: str) -> ClinicalScope | None:
    """Parse ``patient/Condition.rs`` (and v1 spellings); None for non-clinical scopes."""
    m = _CLINICAL.match(scope)
    if not m:
        return None
    perms = _perms(m.group(3))
    if perms is None:
        return None
    return ClinicalScope(m.group(1), m.group(2), perms, scope)


def split(scope: str | Iterable[str] | None) -> list[str]:
    """Split a space-separated scope string into a de-duplicated, ordered list."""
    if scope is None:
        return []
    items = scope.split() if isinstance(scope, str) else list(scope)
    seen: dict[str, None] = {}
    for item in items:
        if item:
            seen.setdefault(item, None)
    return list(seen)


def _v2(ctx: str, resource: str, perms: Iterable[str]) -> str:
    letters = "".join(ch for ch in V2_ORDER if ch in set(perms))
    return f"{ctx}/{resource}.{letters}"


def intersect(requested: str | Iterable[str] | None, registered: str | Iterable[str]) -> list[str]:
    """Scopes to grant: the requested scopes narrowed to what the client registered.

    A requested clinical scope fully covered by one registered scope is granted
    as spelled; otherwise the overlap with each registered scope of the same
    context is granted in v2 spelling (e.g. ``user/DocumentReference.write``
    against ``user/DocumentReference.c`` yields ``user/DocumentReference.c``).
    Non-clinical scopes are granted only when registered verbatim.
    """
    reg_all = split(registered)
    reg_clinical = [c for c in (parse_clinical(s) for s in reg_all) if c]
    reg_plain = {s for s in reg_all if parse_clinical(s) is None}
    out: list[str] = []
    for scope in split(requested):
        want = parse_clinical(scope)
        if want is None:
            if scope in reg_plain and "?" not in scope:
                out.append(scope)
            continue
        same_ctx = [r for r in reg_clinical if r.context == want.context]
        if any(r.resource in ("*", want.resource) and want.perms <= r.perms for r in same_ctx):
            out.append(scope)
            continue
        partial: dict[str, set[str]] = {}
        for r in same_ctx:
            if want.resource == "*":
                resource = r.resource
            elif r.resource in ("*", want.resource):
                resource = want.resource
            else:
                continue
            partial.setdefault(resource, set()).update(want.perms & r.perms)
        out.extend(_v2(want.context, res, perms) for res, perms in partial.items() if perms)
    return split(out)


def is_subset(new: str | Iterable[str], old: str | Iterable[str]) -> bool:
    """True when every scope of ``new`` is implied by ``old`` (refresh narrowing, RFC 6749 s6)."""
    return set(intersect(new, old)) == set(split(new))


@dataclass(frozen=True)
class Decision:
    """Outcome of an access check: allowed, and whether the patient compartment applies."""

    allowed: bool
    compartment: bool = False


def check(scopes: Iterable[str], resource: str, perm: str, *, allow_system: bool) -> Decision:
    """May a token with ``scopes`` perform ``perm`` (c r u d s) on ``resource``?

    ``user/`` and (for backend tokens) ``system/`` grants are not compartment
    limited; a grant that only comes from ``patient/`` scopes is.
    """
    clinical = [c for c in (parse_clinical(s) for s in scopes) if c]
    if any(c.covers(resource, perm) for c in clinical if c.context == "user"):
        return Decision(True, False)
    if allow_system and any(c.covers(resource, perm) for c in clinical if c.context == "system"):
        return Decision(True, False)
    if any(c.covers(resource, perm) for c in clinical if c.context == "patient"):
        return Decision(True, True)
    return Decision(False)
