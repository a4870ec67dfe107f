"""PHI-safe logging.

Log resource types, opaque ids (HMAC of a FHIR id), counts, durations, status
and error codes, booleans. Never names, note text, prompts, completions,
response bodies, tokens. ``event(logger, name, **fields)`` enforces an
allowlist of field names and value types; anything else is dropped and
counted. A library never takes over the host's handlers: ``configure`` is
called only by the CLI and the WSGI entry point.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sys
from typing import Any

ALLOWED_FIELDS = frozenset(
    {
        "resource_type", "rid", "patient", "user", "count", "counts", "duration_ms", "status",
        "code", "error_code", "ok", "token_present", "task", "backend", "model", "run_id",
        "chunks", "documents", "allowed", "denied", "reasons", "attempt", "retry_in_s",
        "method", "route", "http_status", "profile", "written", "queued", "turns",
        "tokens_in", "tokens_out", "cost_usd", "interaction", "host", "port", "url", "version", "scopes",
    }
)
_key = b"unset"


def set_hmac_key(key: bytes) -> None:
    """Key for opaque ids; derived from the app's secret at start-up."""
    global _key  # noqa: PLW0603 - one process-wide key, set once at start-up
    _key = hashlib.sha256(b"log-ids:" + key).digest()


def opaque(value: str | None) -> str | None:
    """HMAC a FHIR id (or any identifier) so logs can correlate without revealing it."""
    if value is None:
        return None
    return hmac.new(_key, value.encode(), hashlib.sha256).hexdigest()[:16]


def _safe(value: Any) -> bool:
    if isinstance(value, (bool, int, float)) or value is None:
        return True
    if isinstance(value, str):
        return len(value) <= 200
    if isinstance(value, dict):
        return all(isinstance(k, str) and _safe(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_safe(v) for v in value)
    return False


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a structured event with allowlisted fields only."""
    kept = {k: v for k, v in fields.items() if k in ALLOWED_FIELDS and _safe(v)}
    dropped = len(fields) - len(kept)
    if dropped:
        kept["dropped_fields"] = dropped
    logger.log(level, "%s %s", name, json.dumps(kept, sort_keys=True, default=str))


def configure(level: str = "INFO") -> None:
    """Install one stderr handler on the app's loggers (CLI / WSGI entry only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for name in ("app", "sandbox"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level)
        lg.propagate = False
