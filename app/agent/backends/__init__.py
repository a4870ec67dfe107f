"""LLM backends behind one small interface, registered the same way.

Built-in: ``offline`` (deterministic, no network). ``anthropic`` and ``openai``
are not built yet: asking for them raises ``NotBuiltError`` (never a pretend result).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from app.agent.citations import ProposedSentence
from app.agent.guard import Limits
from app.agent.tasks import TaskSpec
from app.errors import NotBuiltError
from app.retrieval.chunking import Chunk
from app.retrieval.index import SearchResult


class Tools(Protocol):
    """What a backend may call: only the permitted index and minimal chart facts."""

    def search(self, query: str, k: int = 6) -> list[SearchResult]: ...

    def conditions(self) -> list[dict[str, str]]: ...

    def document_date(self, document_id: str) -> str | None: ...

    def read_notes(self) -> list[Chunk]: ...

    def demographics(self) -> dict[str, object]: ...

    def check_time(self) -> None: ...


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


_REGISTRY: dict[str, Callable[[], Backend]] = {}


def register(name: str, factory: Callable[[], Backend]) -> None:
    _REGISTRY[name] = factory


def available_backends() -> tuple[str, ...]:
    _builtin()
    return tuple(sorted(_REGISTRY))


def get_backend(name: str) -> Backend:
    _builtin()
    if name not in _REGISTRY:
        raise NotBuiltError(f"The '{name}' backend is not built yet; use 'offline'.", code="backend_not_built")
    return _REGISTRY[name]()


def _builtin() -> None:
    if "offline" not in _REGISTRY:
        from app.agent.backends.offline import OfflineBackend

        register("offline", OfflineBackend)
