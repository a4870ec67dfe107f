"""LLM backends behind one small interface, registered the same way.

Built-in, registered the way a third party would register one: ``offline``
(deterministic, no network, the default), ``anthropic`` (Claude, Messages API with
tool use) and ``openai`` (OpenAI-compatible /v1/chat/completions: vLLM, Ollama,
llama.cpp). An unknown name raises ``NotBuiltError``.

``get_backend(name)`` builds one registered backend; ``build_backend(settings)`` builds what a
run uses: the ``APP_LLM_FALLBACK`` chain behind per-backend circuit breakers (``fallback.py``,
``breaker.py``), optionally in hybrid mode (``hybrid.py``: the offline engine picks the evidence
the model reads).
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
    # who actually wrote the draft, when a wrapper (fallback chain, hybrid) ran another backend
    backend: str | None = None
    model: str | None = None


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


# -- the chain a run uses -----------------------------------------------------------------------

MODEL_BACKENDS = ("anthropic", "openai")


def _listed(settings: Settings) -> list[str]:
    names = [n.strip() for n in settings.llm_fallback.split(",") if n.strip()]
    from app.errors import ConfigError

    unknown = [n for n in names if n not in available_backends()]
    if unknown:
        raise ConfigError(f"APP_LLM_FALLBACK names unknown backends ({', '.join(unknown)}); "
                          f"choose from {', '.join(available_backends())}.")
    if len(set(names)) != len(names):
        raise ConfigError("APP_LLM_FALLBACK lists a backend twice.")
    return names


def chain_names(settings: Settings, name: str | None = None) -> list[str]:
    """The backends a run tries, in order: the chosen one, then those after it in APP_LLM_FALLBACK.
    A backend chosen explicitly (``name``) that is not in the chain runs alone."""
    primary = name or settings.llm_backend
    listed = _listed(settings)
    if primary in listed:
        return listed[listed.index(primary):]
    return [primary]


def check_chain(settings: Settings) -> None:
    """Start-up check of APP_LLM_FALLBACK, APP_LLM_HYBRID and the price of every model in the chain."""
    import os

    from app.agent.backends.llm import prices_for
    from app.errors import ConfigError

    listed = _listed(settings)
    if listed and listed[0] != settings.llm_backend:
        raise ConfigError(f"APP_LLM_FALLBACK starts with '{listed[0]}' but APP_LLM_BACKEND={settings.llm_backend}: "
                          f"the chain starts at APP_LLM_BACKEND; set APP_LLM_BACKEND={listed[0]} or reorder.")
    names = chain_names(settings)
    for n in names:
        if n == "anthropic":
            if settings.anthropic_api_key is None and not os.environ.get("ANTHROPIC_API_KEY"):
                raise ConfigError("The anthropic backend (APP_LLM_FALLBACK) needs APP_ANTHROPIC_API_KEY.")
            prices_for(settings, settings.anthropic_model)
        elif n == "openai":
            if not (settings.openai_base_url and settings.openai_model):
                raise ConfigError("The openai backend (APP_LLM_FALLBACK) needs APP_OPENAI_BASE_URL and "
                                  "APP_OPENAI_MODEL.")
            prices_for(settings, settings.openai_model)
    if settings.llm_hybrid and all(n == "offline" for n in names):
        raise ConfigError("APP_LLM_HYBRID=true needs a model backend: set APP_LLM_BACKEND=anthropic or openai.")


def build_backend(settings: Settings | None = None, name: str | None = None, *,
                  hybrid: bool | None = None) -> Backend:
    """What a run uses: ``name`` (default APP_LLM_BACKEND) and the backends after it in
    APP_LLM_FALLBACK, each behind this process's circuit breaker; in hybrid mode (``hybrid``,
    default APP_LLM_HYBRID) the offline engine runs first and chooses what the model reads.
    The offline backend alone is returned as is (also in hybrid mode: there is no model to read)."""
    from app.agent.backends.breaker import process_breakers
    from app.agent.backends.fallback import FallbackBackend
    from app.config import load_settings

    settings = settings or load_settings()
    names = chain_names(settings, name)
    hybrid = settings.llm_hybrid if hybrid is None else hybrid
    board = process_breakers(settings)
    if names == ["offline"]:  # chosen explicitly: hybrid mode has no model to hand the evidence to
        return get_backend("offline", settings)
    if hybrid:
        from app.agent.backends.hybrid import HybridBackend

        models = [n for n in names if n != "offline"]  # not empty: the chain is not offline alone
        return HybridBackend(FallbackBackend([get_backend(n, settings) for n in models], board),
                             get_backend("offline", settings), offline_fallback="offline" in names)
    return FallbackBackend([get_backend(n, settings) for n in names], board)
