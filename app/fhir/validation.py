"""Strict on write, lenient on read.

Everything the app sends is validated with ``fhir.resources`` R4B first: a
400 from the server means a bug on our side, and strict EHRs reject what a
lenient test server would accept. What the app reads is only checked where it
matters: a resource that fails validation is skipped and counted, never fatal
(public sandboxes hold plenty of invalid data).
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from app.errors import InvalidResourceError


def _paths(exc: ValidationError) -> tuple[str, ...]:
    out = []
    for err in exc.errors()[:10]:
        out.append(".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("function-")))
    return tuple(dict.fromkeys(p for p in out if p))


def problems(resource: Any) -> tuple[str, ...] | None:
    """None when ``resource`` is a valid R4B resource; else the failing element paths."""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return ("resourceType",)
    try:
        model = get_fhir_model_class(resource["resourceType"])
    except (KeyError, ValueError, AttributeError):
        return ("resourceType",)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return _paths(exc) or ("(resource)",)
    except (TypeError, ValueError):
        return ("(resource)",)
    return None


def validate_for_write(resource: dict) -> None:
    """Raise ``InvalidResourceError`` (paths only, no values) unless the resource is valid R4B."""
    bad = problems(resource)
    if bad is not None:
        raise InvalidResourceError(str(resource.get("resourceType", "resource")), bad)


def is_valid(resource: Any) -> bool:
    return problems(resource) is None
