"""LLM backends behind one small interface, registered the same way.

Built-in, registered the way a third party would register one: ``offline``
(deterministic, no network, the default), ``anthropic`` (Claude, Messages API with
tool use) and ``openai`` (OpenAI-compatible /v1/chat/completions: vLLM, Ollama,
llama.cpp). An unknown name raises ``NotBuiltError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from app.agent.citations import ProposedSentence
from app.agent.guard import Limits
from app.agent.tasks import TaskSpec
from app.errors import NotBuiltError
from app.retrieval.chunking import Chunk
from app.retrieval.index import SearchResult

if TYPE_CHECKING:
    from app.config import Settings


class Tools(Protocol):
    """What a backend may call: only the permitted index and minimal chart facts."""

    def search(self, query: str, k: int = 6) -> list[SearchResult]: ...

    def conditions(self) -> list[dict[str, str]]: ...

    def document_date(self, document_id: str) -> str | None: ...

    def read_notes(self) -> list[Chunk]: ...

    def demographics(self) -> dict[str, object]: ...

    def check_time(self) -> None: ...

    def patient_resource(self) -> dict | None:
        """For the app's pseudonymiser only; never sent to a model."""
        ...


@dataclass
class BackendResult:
    sentences: list[ProposedSentence]
    findings: dict | None = None
    turns: int = 1
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    status: str = "completed"
    answer_found: bool = True
    notes: list[str] = field(default_factory=list)


class Backend(Protocol):
    name: str
    model: str

    def run(self, task: TaskSpec, tools: Tools, *, question: str | None, limits: Limits) -> BackendResult: ...


_REGISTRY: dict[str, Callable[..., Backend]] = {}


def register(name: str, factory: Callable[..., Backend]) -> None:
    """``factory(settings)`` builds the backend; ``settings`` may be None (read the environment)."""
    _REGISTRY[name] = factory


def available_backends() -> tuple[str, ...]:
    _builtin()
    return tuple(sorted(_REGISTRY))


def get_backend(name: str, settings: Settings | None = None) -> Backend:
    _builtin()
    if name not in _REGISTRY:
        raise NotBuiltError(f"The '{name}' backend is not built; choose one of {', '.join(sorted(_REGISTRY))}.",
                            code="backend_not_built")
    return _REGISTRY[name](settings)


def _offline(settings: Settings | None = None) -> Backend:
    from app.agent.backends.offline import OfflineBackend

    return OfflineBackend()


def _anthropic(settings: Settings | None = None) -> Backend:
    from app.agent.backends.anthropic import build

    return build(settings)


def _openai(settings: Settings | None = None) -> Backend:
    from app.agent.backends.openai import build

    return build(settings)


def _builtin() -> None:
    for name, factory in (("offline", _offline), ("anthropic", _anthropic), ("openai", _openai)):
        _REGISTRY.setdefault(name, factory)
