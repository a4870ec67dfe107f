"""The app's own audit trail: append-only, hash-chained, PHI-free BALP AuditEvents.

See ``app.audit.trail`` and ../shared/STANDARDS.md, "AuditEvent (IHE BALP shape)".
"""

from app.audit.trail import AuditEntry, AuditTrail, VerifyResult

__all__ = ["AuditEntry", "AuditTrail", "VerifyResult"]
