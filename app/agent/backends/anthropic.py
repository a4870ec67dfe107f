"""The ``anthropic`` backend: Claude through the Messages API with tool use (official SDK).

- model id pinned in config (``APP_ANTHROPIC_MODEL``); static instructions sent as a system
  block with ``cache_control`` (prompt caching), tools listed in a fixed order;
- timeouts (``APP_LLM_TIMEOUT_S``); retries with backoff on 408, 429, 5xx and 529 overloaded
  (``APP_LLM_MAX_RETRIES``); the SDK's own retries are off so the count is ours;
- tokens and cost per run (cache writes and reads priced separately);
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
    ToolInputError,
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
from app.errors import FatalUpstreamError, TemporaryUpstreamError
from app.logging import event

log = logging.getLogger(__name__)
# USD per million tokens (input, output), list prices; APP_LLM_PRICE_* override.
PRICES = {"claude-sonnet-4-5": (3.0, 15.0), "claude-sonnet-4-5-20250929": (3.0, 15.0),
          "claude-haiku-4-5": (1.0, 5.0), "claude-haiku-4-5-20251001": (1.0, 5.0),
          "claude-opus-4-5": (5.0, 25.0), "claude-opus-4-5-20251101": (5.0, 25.0)}


class AnthropicBackend:
    name = "anthropic"

    def __init__(self, settings: Settings, *, client: anthropic.Anthropic | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.model = settings.anthropic_model
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        self.client = client or anthropic.Anthropic(api_key=key, timeout=settings.llm_timeout_s, max_retries=0)
        self.sleep = sleep
        self.pseudonymise = True if settings.llm_pseudonymise is None else settings.llm_pseudonymise
        self.prices = prices_for(settings, self.model, PRICES)

    # -- one call, with retries ------------------------------------------------------------------

    def _create(self, messages: list[dict[str, Any]], max_tokens: int) -> Any:
        attempts = self.settings.llm_max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return self.client.messages.create(
                    model=self.model, max_tokens=max_tokens, messages=messages,  # type: ignore[arg-type]
                    system=[{"type": "text", "text": SYSTEM_INSTRUCTIONS, "cache_control": {"type": "ephemeral"}}],
                    tools=TOOL_SPECS,  # type: ignore[arg-type]
                    timeout=self.settings.llm_timeout_s)
            except anthropic.APIStatusError as exc:
                status = exc.status_code
                if status not in RETRYABLE_STATUS:
                    raise FatalUpstreamError(f"The model endpoint refused the request (HTTP {status}).",
                                             code="model_refused") from None
                reason = f"http_{status}"
            except (anthropic.APIConnectionError, anthropic.APITimeoutError):
                reason = "network"
            event(log, "agent.model_retry", backend=self.name, attempt=attempt, code=reason,
                  retry_in_s=min(30.0, 0.5 * 2 ** (attempt - 1)))
            if attempt < attempts:
                self.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)))
        raise TemporaryUpstreamError("The model endpoint is unavailable or overloaded; try again later.",
                                     code="model_unavailable")

    # -- the agent loop --------------------------------------------------------------------------

    def run(self, task: TaskSpec, tools: Tools, *, question: str | None, limits: Limits) -> BackendResult:
        pseudo = Pseudonymiser.for_patient(tools.patient_resource(), enabled=self.pseudonymise)
        messages: list[dict[str, Any]] = [{"role": "user", "content": first_message(task, question, pseudo)}]
        usage = {"in": 0, "out": 0, "cost": 0.0}
        repairs = 0
        turns = 0

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
                    text = run_tool(block.name, block.input, tools, pseudo)
                    replies.append({"type": "tool_result", "tool_use_id": block.id, "content": text})
                except ToolInputError as exc:
                    replies.append({"type": "tool_result", "tool_use_id": block.id, "is_error": True,
                                    "content": str(exc)})
            messages.append({"role": "user", "content": replies})


def build(settings: Settings | None = None) -> AnthropicBackend:
    from app.config import load_settings

    return AnthropicBackend(settings or load_settings())


__all__ = ["AnthropicBackend", "build"]
