"""The offline backend: dispatch per task and its pure helpers."""

from __future__ import annotations

import sys
import types

from app.agent.backends import BackendResult
from app.agent.backends.offline import OfflineBackend, condition_variants
from app.agent.guard import Limits
from app.agent.tasks import TASKS


def test_condition_variants_drop_qualifiers_longest_first():
    assert condition_variants("Malignant melanoma, stage IV (disorder)") == [
        "Malignant melanoma, stage IV (disorder)", "Malignant melanoma, stage IV", "Malignant melanoma"]


def test_condition_variants_never_shorter_than_eight_characters():
    assert condition_variants("Gout (disorder)") == ["Gout (disorder)"]
    assert condition_variants("CKD") == []


def test_irae_task_dispatches_to_the_clinical_engine_when_it_is_installed(monkeypatch):
    called = []
    engine = types.ModuleType("app.agent.clinical.irae")

    def screen(tools):  # type: ignore[no-untyped-def]
        called.append(tools)
        return BackendResult(sentences=[], findings={"irae_detected": False, "events": [], "excluded": []})

    engine.screen = screen  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "app.agent.clinical.irae", engine)
    tools = object()
    result = OfflineBackend().run(TASKS["irae"], tools, question=None, limits=Limits())  # type: ignore[arg-type]
    assert called == [tools] and result.findings == {"irae_detected": False, "events": [], "excluded": []}


def test_unknown_task_is_refused():
    import pytest

    bogus = TASKS["summary"].__class__(**{**TASKS["summary"].__dict__, "name": "bogus"})
    with pytest.raises(ValueError):
        OfflineBackend().run(bogus, object(), question=None, limits=Limits())  # type: ignore[arg-type]
