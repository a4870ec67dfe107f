"""The fallback chain (``APP_LLM_FALLBACK``, e.g. ``anthropic,openai,offline``).

Each backend runs behind its circuit breaker (``breaker.py``). When one stays unavailable after
its own retries (an ``UpstreamError``: 5xx or 529 exhausted, network, a refusal) the next one
runs, with a fresh tool budget under the same wall-time deadline. An escalation, a loop or a
limit is an answer, not an outage: it ends the run and the chain stops there. A backend whose
breaker is open is skipped without a call.

The draft names the backend and model that actually wrote it (``BackendResult.backend`` /
``model``, which ``run_task`` prefers), and its notes say that a fallback happened: backend names,
models and error codes only, no PHI. Tokens spent by a backend that failed mid-run are not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from app.agent.backends import Backend, BackendResult, Tools
from app.agent.backends.breaker import BreakerBoard
from app.agent.guard import Limits
from app.agent.tasks import TaskSpec
from app.errors import TemporaryUpstreamError, UpstreamError
from app.logging import event

log = logging.getLogger(__name__)


def fresh_tools(tools: Tools) -> Tools:
    """The same chart with a new tool-call budget and repeat memory, same deadline."""
    from app.agent.runtime import ChartTools

    if not isinstance(tools, ChartTools):
        return tools
    fresh = ChartTools(tools.chart, tools.limits)
    fresh.deadline = tools.deadline
    return fresh


class FallbackBackend:
    """Run ``backends`` in order; the first that answers writes the draft."""

    def __init__(self, backends: Sequence[Backend], breakers: BreakerBoard) -> None:
        if not backends:
            raise ValueError("a fallback chain needs at least one backend")
        self.backends = list(backends)
        self.breakers = breakers
        self.name = self.backends[0].name
        self.model = self.backends[0].model

    def run(self, task: TaskSpec, tools: Tools, *, question: str | None, limits: Limits) -> BackendResult:
        happened: list[str] = []
        codes: list[str] = []
        for backend in self.backends:
            breaker = self.breakers.get(backend.name)
            if not breaker.allow():
                wait = breaker.retry_in_s()
                happened.append(f"{backend.name} skipped (circuit open)")
                codes.append("circuit_open")
                event(log, "agent.fallback", backend=backend.name, code="circuit_open",
                      retry_in_s=None if wait is None else round(wait, 1))
                continue
            try:
                result = backend.run(task, fresh_tools(tools) if happened else tools,
                                     question=question, limits=limits)
            except UpstreamError as exc:
                breaker.record_failure(exc.code)
                happened.append(f"{backend.name} ({backend.model}) unavailable ({exc.code})")
                codes.append(exc.code)
                event(log, "agent.fallback", backend=backend.name, model=backend.model, error_code=exc.code)
                continue
            except BaseException:
                breaker.record_success()  # the endpoint answered; the run itself went wrong (limits)
                raise
            breaker.record_success()
            result.backend = result.backend or backend.name
            result.model = result.model or backend.model
            if happened:
                result.notes = [*result.notes, "Fallback: " + "; ".join(happened)
                                + f"; this draft was written by {result.backend} ({result.model})."]
            return result
        if codes and all(c == "circuit_open" for c in codes):
            first = self.breakers.get(self.backends[0].name)
            wait = first.retry_in_s()
            names = ", ".join(b.name for b in self.backends)
            raise TemporaryUpstreamError(
                f"Model backend paused after repeated failures (circuit open: {names}); "
                f"it is tried again in about {0 if wait is None else round(wait)} s.", code="circuit_open")
        raise TemporaryUpstreamError("No model backend is available (" + "; ".join(happened) + "); try again later.",
                                     code="model_unavailable")
