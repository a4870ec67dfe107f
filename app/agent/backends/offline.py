"""The offline backend: deterministic, extractive, no network.

Summaries (``app.agent.clinical.summary``) and answers (``app.agent.clinical.question``)
are built from verbatim lines of permitted notes, so every claim can be checked; both read
the notes once and never repeat a tool call (the runtime's loop and tool-call guards are for
model backends). The irAE screen is ``app.agent.clinical.irae.screen`` when that engine is
installed, else the older rules of ``app.agent.irae``.
"""

from __future__ import annotations

from app.agent.backends import BackendResult, Tools
from app.agent.clinical.summary import condition_variants
from app.agent.guard import Limits
from app.agent.tasks import TaskSpec

MODEL_ID = "offline-extractive-1"

__all__ = ["MODEL_ID", "OfflineBackend", "condition_variants"]


def _irae_screen(tools: Tools) -> BackendResult:
    try:
        from app.agent.clinical.irae import screen
    except ModuleNotFoundError as exc:
        if exc.name != "app.agent.clinical.irae":
            raise  # the engine is there but one of its dependencies is not: say so
        from app.agent.irae import screen
    return screen(tools)


class OfflineBackend:
    name = "offline"
    model = MODEL_ID

    def run(self, task: TaskSpec, tools: Tools, *, question: str | None, limits: Limits) -> BackendResult:
        if task.name == "summary":
            from app.agent.clinical.summary import summarize

            return summarize(tools)
        if task.name == "question":
            from app.agent.clinical.question import answer

            return answer(tools, question or "")
        if task.name == "irae":
            return _irae_screen(tools)
        raise ValueError(task.name)
