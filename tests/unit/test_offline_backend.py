"""The offline backend's pure helpers."""

from __future__ import annotations

from app.agent.backends.offline import condition_variants


def test_condition_variants_drop_qualifiers_longest_first():
    assert condition_variants("Malignant melanoma, stage IV (disorder)") == [
        "Malignant melanoma, stage IV (disorder)", "Malignant melanoma, stage IV", "Malignant melanoma"]


def test_condition_variants_never_shorter_than_eight_characters():
    assert condition_variants("Gout (disorder)") == ["Gout (disorder)"]
    assert condition_variants("CKD") == []
