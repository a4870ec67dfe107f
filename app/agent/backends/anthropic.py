"""The ``anthropic`` backend: Claude through the Messages API with tool use (official SDK).

- model id pinned in config (``APP_ANTHROPIC_MODEL``, default ``claude-sonnet-5-5``); static
  instructions sent as a system block with ``cache_control`` (prompt caching), tools listed in a
  fixed order; no sampling parameters (Sonnet 5.x answers 400 to non-default ones);
- timeouts (``APP_LLM_TIMEOUT_S``); retries with backoff on 408, 429, 5xx and 529 overloaded
  (``APP_LLM_MAX_RETRIES``, ``llm.call_with_retries``); the SDK's own retries are off so the
  count is ours;
- tokens and cost per run from ``prices.yaml`` (cache writes and reads priced separately); a
  model without a price is refused when the backend is built;
- the draft arrives through the ``submit_draft`` tool, validated with pydantic; one repair
  attempt (also after a ``max_tokens`` stop), else the run is ``escalated``;
- names, identifiers and exact dates pseudonymised before the call, restored after
  (``APP_LLM_PSEUDONYMISE``, on by default for this backend).

https://docs.anthropic.com/en/api/messages · https://docs.anthropic.com/en/docs/build-with-claude/tool-use
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anthropic

from app.agent.backends import BackendResult, Tools
from app.agent.backends.llm import (
    RETRYABLE_STATUS,
    SYSTEM_INSTRUCTIONS,
    TOOL_SPECS,
    OutputInvalid,
    Pseudonymiser,
    RetryableCall,
    ToolInputError,
    call_with_retries,
    cost_usd,
    first_message,
    parse_output,
    prices_for,
    run_tool,
    to_result,
)
from app.agent.guard import Limits
from app.agent.tasks import TaskSpec
from app.config import Settings
from app.errors import FatalUpstreamError

log = logging.getLogger(__name__)
DEFAULT_MODEL = "claude-sonnet-5-5"


class AnthropicBackend:
    name = "anthropic"

    def __init__(self, settings: Settings, *, client: anthropic.Anthropic | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.model = settings.anthropic_model
        self.prices = prices_for(settings, self.model)  # ConfigError for an unpriced model, before any call
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        self.client = client or anthropic.Anthropic(api_key=key, timeout=settings.llm_timeout_s, max_retries=0)
        self.sleep = sleep
        self.pseudonymise = True if settings.llm_pseudonymise is None else settings.llm_pseudonymise

    # -- one call, with retries ------------------------------------------------------------------

    def _create(self, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        def send() -> Any:
            try:  # no temperature / top_p / top_k: Sonnet 5.x refuses non-default sampling parameters
                return self.client.messages.create(
                    model=self.model, max_tokens=max_tokens, messages=messages,  # type: ignore[arg-type]
                    system=[{"type": "text", "text": SYSTEM_INSTRUCTIONS, "cache_control": {"type": "ephemeral"}}],
                    tools=TOOL_SPECS,  # type: ignore[arg-type]
                    timeout=self.settings.llm_timeout_s)
            except anthropic.APIStatusError as exc:
                if exc.status_code not in RETRYABLE_STATUS:
                    raise FatalUpstreamError(f"The model endpoint refused the request (HTTP {exc.status_code}).",
                                             code="model_refused") from None
                raise RetryableCall(f"http_{exc.status_code}", getattr(exc.response, "headers", None)) from None
            except (anthropic.APIConnectionError, anthropic.APITimeoutError):
                raise RetryableCall("network") from None

        return call_with_retries(send, backend=self.name, retries=self.settings.llm_max_retries, sleep=self.sleep)

    # -- the agent loop --------------------------------------------------------------------------

    def run(self, task: TaskSpec, tools: Tools, *, question: str | None, limits: Limits) -> BackendResult:
        pseudo = Pseudonymiser.for_patient(tools.patient_resource(), enabled=self.pseudonymise)
        messages: list[dict[str, Any]] = [{"role": "user", "content": first_message(task, question, pseudo)}]
        usage = {"in": 0, "out": 0, "cost": 0.0}
        repairs = 0
        turns = 0
        state: dict = {}

        def result(status: str, note: str | None = None, base: BackendResult | None = None) -> BackendResult:
            out = base or BackendResult(sentences=[], status=status, notes=[note] if note else [])
            out.status, out.turns = status, turns
            out.tokens_in, out.tokens_out, out.cost_usd = usage["in"], usage["out"], usage["cost"]
            return out

        while True:
            if turns >= limits.max_turns:
                return result("limit_exceeded", "The run used all its turns without a draft.")
            tools.check_time()
            turns += 1
            response = self._create(messages, self.settings.llm_max_output_tokens)
            u = response.usage
            cache_write = getattr(u, "cache_creation_input_tokens", 0) or 0
            cache_read = getattr(u, "cache_read_input_tokens", 0) or 0
            usage["in"] += u.input_tokens + cache_write + cache_read
            usage["out"] += u.output_tokens
            usage["cost"] += cost_usd(self.prices, u.input_tokens, u.output_tokens, cache_write, cache_read)
            if usage["in"] + usage["out"] > limits.max_tokens:
                return result("limit_exceeded", "The run used more tokens than its limit.")
            content = [block.model_dump(exclude_none=True) for block in response.content]
            messages.append({"role": "assistant", "content": content})
            if response.stop_reason == "max_tokens":
                if repairs >= 1:
                    return result("escalated", "The model's answer was cut off twice; a clinician must draft this.")
                repairs += 1
                messages.append({"role": "user", "content": "Your answer was cut off. Call submit_draft now with "
                                                            "a shorter draft."})
                continue
            uses = [b for b in response.content if b.type == "tool_use"]
            if not uses:
                if repairs >= 1:
                    return result("escalated", "The model did not submit a draft; a clinician must draft this.")
                repairs += 1
                messages.append({"role": "user", "content": "Call submit_draft with the draft now."})
                continue
            replies: list[dict[str, Any]] = []
            for block in uses:
                if block.name == "submit_draft":
                    try:
                        out = parse_output(pseudo.restore(block.input), task)
                    except OutputInvalid as exc:
                        if repairs >= 1:
                            return result("escalated", "The model's draft failed validation twice.")
                        repairs += 1
                        replies.append({"type": "tool_result", "tool_use_id": block.id, "is_error": True,
                                        "content": f"{exc} Fix it and call submit_draft again."})
                        continue
                    return result("completed", base=to_result(out))
                try:
                    text = run_tool(block.name, block.input, tools, pseudo, state)
                    replies.append({"type": "tool_result", "tool_use_id": block.id, "content": text})
                except ToolInputError as exc:
                    replies.append({"type": "tool_result", "tool_use_id": block.id, "is_error": True,
                                    "content": str(exc)})
            messages.append({"role": "user", "content": replies})


def build(settings: Settings | None = None) -> AnthropicBackend:
    from app.config import load_settings

    return AnthropicBackend(settings or load_settings())


__all__ = ["DEFAULT_MODEL", "AnthropicBackend", "build"]
