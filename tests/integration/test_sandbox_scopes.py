"""Scope algebra of the sandbox (pure; lives here because tests/unit belongs to the app)."""

from __future__ import annotations

import pytest

from sandbox import scopes as sc

REGISTERED = ("launch openid patient/*.rs patient/Patient.r user/DocumentReference.c "
              "user/DocumentReference.u system/*.rs")


@pytest.mark.parametrize(("requested", "granted"), [
    ("patient/Condition.read", ["patient/Condition.read"]),          # v1 read == v2 rs
    ("patient/Condition.rs", ["patient/Condition.rs"]),
    ("patient/*.read", ["patient/*.read"]),
    ("patient/Condition.cruds", ["patient/Condition.rs"]),           # narrowed
    ("user/DocumentReference.write", ["user/DocumentReference.cu"]),  # write == cud, narrowed
    ("user/*.cu", ["user/DocumentReference.cu"]),
    ("user/Patient.r offline_access", []),                           # not registered
    ("patient/Condition.sr", []),                                    # v2 letters out of order
    ("patient/Observation.rs?category=laboratory", []),              # fine-grained: not supported
    ("launch launch openid", ["launch", "openid"]),
])
def test_intersect(requested, granted):
    assert sc.intersect(requested, REGISTERED) == granted


def test_check_contexts():
    scopes = ["patient/Condition.rs", "user/DocumentReference.c", "system/*.rs"]
    assert sc.check(scopes, "Condition", "s", allow_system=False) == sc.Decision(True, True)
    assert sc.check(scopes, "DocumentReference", "c", allow_system=False) == sc.Decision(True, False)
    assert not sc.check(scopes, "Observation", "r", allow_system=False).allowed
    assert sc.check(scopes, "Observation", "r", allow_system=True) == sc.Decision(True, False)
    assert not sc.check(["patient/*.read"], "Patient", "c", allow_system=False).allowed
