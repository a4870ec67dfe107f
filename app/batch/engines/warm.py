"""Imported by the local engine's forkserver before it forks any worker: runs the screen once on a
tiny made-up chart, through the public path (``get_backend("offline")`` via ``Screener``), so the
clinical NLP pipeline the offline engine builds on first use is built once in the forkserver and
shared copy-on-write by every worker, instead of once per worker (seconds each)."""

from __future__ import annotations

from app.batch.screen import Screener

_ITEM = {"key": "warm-up", "patient_id": "warm-up", "role": "clinician", "patient": None, "conditions": [],
         "counts": {},
         "documents": [{"meta": {"id": "warm-up", "version": "1", "type_code": "11506-3", "category_codes": [],
                                 "security": [], "date": "2026-01-02"},
                        "text": "Assessment: pembrolizumab started 2026-01-01. "
                                "Grade 2 colitis, likely immune related."}]}


def warm() -> None:
    try:
        Screener(b"warm-up-only-not-a-secret", "irae", "offline").screen_item(_ITEM)
    except Exception:  # noqa: BLE001,S110 - a failed warm-up only costs time: workers build it themselves
        pass


warm()
