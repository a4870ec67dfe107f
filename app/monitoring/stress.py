"""Template stress test: the gold notes re-formatted as other EHRs and transcription would write them.

Each transform keeps every clinical fact of a note and changes only its form:

- ``upper``: ALL-CAPS (radiology and legacy systems);
- ``bullets``: every sentence its own ``- `` bullet, section headings kept;
- ``dictation``: run-on dictation, headings spoken inline ("assessment colon"), sentence ends
  turned into commas and "period" words only at paragraph ends, line breaks removed;
- ``reorder``: the note's sections in reverse order (plan first), bodies unchanged.

``transform_corpus(src, dst, kind)`` rewrites every text attachment of a bundles directory and
copies the gold labels, so ``python -m app eval --data dst`` scores the same labels on the new
form. Evidence quotes in the gold labels are not used by the scorer, so they need no rewrite.
The field guide's criterion: F1 within ±3 percentage points of the baseline on every transform.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from app.errors import AppError

_HEADING = re.compile(r"^(?:#+\s*)?([A-Z][A-Za-z /&()-]{1,40}):?\s*$|^(?:#+\s*)([^\n]{1,60})$", re.M)
_INLINE_HEADING = re.compile(r"^([A-Z][A-Za-z /&()-]{1,40}):\s+(?=\S)", re.M)
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)%])\.\s+(?=[A-Z])")


def upper(text: str) -> str:
    return text.upper()


def bullets(text: str) -> str:
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or _HEADING.match(stripped) or stripped.startswith(("-", "*", "•")):
            out.append(line)
            continue
        parts = [p.strip() for p in _SENTENCE_END.split(stripped) if p.strip()]
        out.extend(f"- {p}" for p in parts)
    return "\n".join(out)


def dictation(text: str) -> str:
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    spoken = []
    for p in paragraphs:
        p = _INLINE_HEADING.sub(lambda m: f"{m.group(1).lower()} colon ", p)
        p = _HEADING.sub(lambda m: f"{(m.group(1) or m.group(2)).lower()} colon", p)
        p = re.sub(r"\s*\n\s*", " ", p)
        p = _SENTENCE_END.sub(", ", p).strip()
        spoken.append(p.rstrip(".") + " period")
    return " ".join(spoken)


def _sections(text: str) -> list[str]:
    starts = [m.start() for m in re.finditer(r"^(?:#+\s*)?[A-Z][A-Za-z /&()-]{1,40}:", text, re.M)]
    if len(starts) < 2:
        return [text]
    starts = ([0] if starts[0] != 0 else []) + starts
    return [text[a:b].strip("\n") for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def reorder(text: str) -> str:
    parts = _sections(text)
    if len(parts) < 2:
        return text
    head, body = (parts[0], parts[1:]) if not re.match(r"(?:#+\s*)?[A-Z][A-Za-z /&()-]{1,40}:", parts[0]) \
        else ("", parts)
    return "\n\n".join(([head] if head else []) + list(reversed(body)))


TRANSFORMS: dict[str, Callable[[str], str]] = {
    "upper": upper, "bullets": bullets, "dictation": dictation, "reorder": reorder}


def _rewrite_attachment(att: dict, fn: Callable[[str], str]) -> bool:
    ctype = str(att.get("contentType", ""))
    if not ctype.startswith("text/plain") or not isinstance(att.get("data"), str):
        return False
    try:
        text = base64.b64decode(att["data"]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    att["data"] = base64.b64encode(fn(text).encode("utf-8")).decode("ascii")
    att.pop("hash", None)
    att.pop("size", None)
    return True


def transform_corpus(src: Path, dst: Path, kind: str) -> int:
    """Copy ``src`` (bundles/ + gold/) to ``dst`` with every text/plain note transformed; returns
    the number of notes rewritten. Binary resources with text content are rewritten too."""
    if kind not in TRANSFORMS:
        raise AppError(f"Unknown stress transform '{kind}'; choose one of {', '.join(TRANSFORMS)}.",
                       code="unknown_transform", http_status=400)
    fn = TRANSFORMS[kind]
    if not (src / "bundles").is_dir():
        raise AppError("The corpus has no bundles/ directory.", code="corpus_invalid", http_status=400)
    (dst / "bundles").mkdir(parents=True, exist_ok=True)
    if (src / "gold").is_dir():
        shutil.copytree(src / "gold", dst / "gold", dirs_exist_ok=True)
    rewritten = 0
    for path in sorted((src / "bundles").glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for entry in bundle.get("entry") or []:
            res = entry.get("resource") or {}
            if res.get("resourceType") == "DocumentReference":
                for content in res.get("content") or []:
                    rewritten += _rewrite_attachment(content.get("attachment") or {}, fn)
            elif res.get("resourceType") == "Binary" and str(res.get("contentType", "")).startswith("text/plain"):
                att = {"contentType": res["contentType"], "data": res.get("data")}
                if _rewrite_attachment(att, fn):
                    res["data"] = att["data"]
                    rewritten += 1
        (dst / "bundles" / path.name).write_text(json.dumps(bundle, sort_keys=True), encoding="utf-8")
    return rewritten
