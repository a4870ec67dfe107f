"""The offline irAE screen: ``app.agent.clinical.irae`` (medspaCy pipeline, rules as data files).

Kept as the stable import path (``from app.agent.irae import screen``). The previous hand-written
regex engine is ``app.agent.irae_legacy`` (only for side-by-side figures in ``python -m app eval
--engine legacy``).
"""

from __future__ import annotations

from app.agent.clinical.irae import EXCLUSION_KINDS, screen

__all__ = ["EXCLUSION_KINDS", "screen"]
