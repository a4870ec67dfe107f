"""The ``openai`` backend: any OpenAI-compatible ``/v1/chat/completions`` endpoint with tools
(vLLM, Ollama, llama.cpp server) for models run inside the hospital. Same contract as
``anthropic``: tools, limits, retries on 408/429/5xx, token accounting, the draft through the
``submit_draft`` tool validated with one repair attempt, else ``escalated``.

Plain HTTP (httpx2, already required by the anthropic SDK); no vendor SDK.
https://platform.openai.com/docs/api-reference/chat/create
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx2

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
from app.errors import ConfigError, FatalUpstreamError

log = logging.getLogger(__name__)
FUNCTIONS = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                               "parameters": t["input_schema"]}} for t in TOOL_SPECS]


class OpenAICompatibleBackend:
    name = "openai"

    def __init__(self, settings: Settings, *, http: httpx2.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not settings.openai_base_url or not settings.openai_model:
            raise ConfigError("The openai backend needs APP_OPENAI_BASE_URL and APP_OPENAI_MODEL.")
        self.settings = settings
        self.model = settings.openai_model
        self.prices = prices_for(settings, self.model)  # ConfigError when unpriced (in-house: price it 0)
        self.url = settings.openai_base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if settings.openai_api_key:
            headers["Authorization"] = "Bearer " + settings.openai_api_key.get_secret_value()
        self.http = http or httpx2.Client(timeout=settings.llm_timeout_s)
        self.headers = headers
        self.sleep = sleep
        self.pseudonymise = False if settings.llm_pseudonymise is None else settings.llm_pseudonymise

    def _create(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"model": self.model, "messages": messages, "tools": FUNCTIONS, "tool_choice": "auto",
                "max_tokens": self.settings.llm_max_output_tokens, "temperature": 0}

        def send() -> dict[str, Any]:
            try:
                resp = self.http.post(self.url, json=body, headers=self.headers, timeout=self.settings.llm_timeout_s)
            except (httpx2.TimeoutException, httpx2.TransportError):
                raise RetryableCall("network") from None
            if resp.status_code in RETRYABLE_STATUS:
                raise RetryableCall(f"http_{resp.status_code}", resp.headers)
            if resp.status_code >= 300:
                raise FatalUpstreamError(f"The model endpoint refused the request (HTTP {resp.status_code}).",
                                         code="model_refused")
            try:
                data = resp.json()
            except ValueError:
                raise FatalUpstreamError("The model endpoint sent invalid JSON.", code="model_bad_response") from None
            if not isinstance(data, dict) or not data.get("choices"):
                raise FatalUpstreamError("The model endpoint sent an unexpected answer.", code="model_bad_response")
            return data

        return call_with_retries(send, backend=self.name, retries=self.settings.llm_max_retries, sleep=self.sleep)

    def run(self, task: TaskSpec, tools: Tools, *, question: str | None, limits: Limits) -> BackendResult:
        pseudo = Pseudonymiser.for_patient(tools.patient_resource(), enabled=self.pseudonymise)
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_INSTRUCTIONS},
                                          {"role": "user", "content": first_message(task, question, pseudo)}]
        usage = {"in": 0, "out": 0, "cost": 0.0}
        repairs = turns = 0
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
            data = self._create(messages)
            u = data.get("usage") or {}
            t_in, t_out = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
            usage["in"] += t_in
            usage["out"] += t_out
            usage["cost"] += cost_usd(self.prices, t_in, t_out)
            if usage["in"] + usage["out"] > limits.max_tokens:
                return result("limit_exceeded", "The run used more tokens than its limit.")
            choice = data["choices"][0]
            message = choice.get("message") or {}
            calls = message.get("tool_calls") or []
            messages.append({"role": "assistant", "content": message.get("content") or "",
                             **({"tool_calls": calls} if calls else {})})
            if choice.get("finish_reason") == "length" or not calls:
                if repairs >= 1:
                    return result("escalated", "The model did not submit a valid draft; a clinician must draft this.")
                repairs += 1
                messages.append({"role": "user", "content": "Call submit_draft now with a complete, short draft."})
                continue
            for call in calls:
                fn = call.get("function") or {}
                call_id = str(call.get("id") or "")
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = None
                if fn.get("name") == "submit_draft":
                    try:
                        if args is None:
                            raise OutputInvalid("submit_draft arguments are not valid JSON.")
                        out = parse_output(pseudo.restore(args), task)
                    except OutputInvalid as exc:
                        if repairs >= 1:
                            return result("escalated", "The model's draft failed validation twice.")
                        repairs += 1
                        messages.append({"role": "tool", "tool_call_id": call_id,
                                         "content": f"{exc} Fix it and call submit_draft again."})
                        continue
                    return result("completed", base=to_result(out))
                try:
                    if args is None:
                        raise ToolInputError("Tool arguments are not valid JSON.")
                    text = run_tool(str(fn.get("name") or ""), args, tools, pseudo, state)
                except ToolInputError as exc:
                    text = "Error: " + str(exc)
                messages.append({"role": "tool", "tool_call_id": call_id, "content": text})


def build(settings: Settings | None = None) -> OpenAICompatibleBackend:
    from app.config import load_settings

    return OpenAICompatibleBackend(settings or load_settings())
