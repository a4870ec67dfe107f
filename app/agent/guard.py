"""Guards around the agent: note text is data, never instructions.

Injection patterns are detected per document and reported on the draft; text
from a flagged span is never quoted into a draft. Limits stop runaway runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INJECTION_PATTERNS = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\bignore\b.{0,40}\b(previous|prior|above|all)\b.{0,40}\b(instructions?|prompts?|rules)\b",
        r"\bdisregard\b.{0,40}\b(instructions?|system prompt|guidelines)\b",
        r"\byou are now\b",
        r"\b(system|assistant)\s*:\s",
        r"\bnew instructions?\b",
        r"\bapprove (this|the) draft\b",
        r"\b(do not|don't) (report|mention|flag)\b",
        r"</?(system|instructions?|prompt)>",
        # text that addresses an automated reader is never clinical documentation
        r"\b(to|for|attention)\s+(any\s+|the\s+|all\s+)?(ai|a\.i\.|llm|(large\s+)?language\s+models?|chatbots?|"
        r"ai\s+(assistants?|models?|systems?|tools?)|automated\s+(systems?|assistants?|reviewers?))\b",
        r"\b(ai|llm|language\s+model|chatbot)(\s+(assistant|model|system|tool))?\s+"
        r"(processing|reading|reviewing|summari[sz]ing|analy[sz]ing)\b",
        r"\bauthori[sz]ed\s+instructions?\b",
        r"\binstructions?\b.{0,40}\boverrides?\b|\boverrides?\s+(the\s+|all\s+|any\s+)?(previous\s+|prior\s+)?"
        r"(instructions?|oncologist|clinician|physician|care\s+team)\b",
    )
)


def injection_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for p in INJECTION_PATTERNS for m in p.finditer(text)]


def looks_injected(text: str) -> bool:
    return any(p.search(text) for p in INJECTION_PATTERNS)


@dataclass(frozen=True)
class Limits:
    max_turns: int = 8
    max_tool_calls: int = 24
    max_tokens: int = 60_000
    max_wall_s: float = 120.0
    max_repeats: int = 2  # identical tool calls allowed before loop_detected
