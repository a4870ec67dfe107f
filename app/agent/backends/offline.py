"""The offline backend: deterministic, extractive, no network.

Summaries and answers are built from verbatim sentences of permitted chunks,
so every claim can be checked; the irAE screen uses ``app.agent.irae``
(lexicon, negation, attribution and CTCAE grading rules).
"""

from __future__ import annotations

import re

from app.agent.backends import BackendResult, Tools
from app.agent.citations import ProposedSentence
from app.agent.guard import Limits, looks_injected
from app.agent.tasks import TaskSpec
from app.retrieval.index import SearchResult

MODEL_ID = "offline-extractive-1"
_STOP = frozenset(
    "a an and are as at be by did does for from had has have how in is it its of on or the this "
    "to was were what when which who why with patient patients any there their been do".split()
)
_WORD = re.compile(r"[a-z0-9]+")
_BOOST_SECTIONS = ("assessment", "plan", "impression")
# Note banners (who, record number, author) and bare headings carry no clinical content.
_BANNER = re.compile(r"\b(?:MRN|DOB)\s*:|^(?:Patient|Author|Date of service)\s*:|^[A-Z][A-Z &/-]{6,}$")


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


def candidate_sentences(results: list[SearchResult]) -> list[tuple[SearchResult, str]]:
    """Verbatim sentences of retrieved chunks, skipping injected or trivial ones."""
    from app.agent.irae import _pieces

    out: list[tuple[SearchResult, str]] = []
    for res in results:
        text = res.chunk.text
        for start, end in _pieces(text):
            sentence = text[start:end].strip()
            if len(sentence) < 25 or len(sentence) > 400 or looks_injected(sentence) or _BANNER.search(sentence):
                continue
            if sentence.rstrip(":").istitle() or sentence.endswith(":"):
                continue
            out.append((res, sentence))
    return out


def condition_variants(name: str) -> list[str]:
    """The coded display, then shorter forms a note is likely to use, longest first.

    "Malignant melanoma, stage IV (disorder)" → ["Malignant melanoma, stage IV (disorder)",
    "Malignant melanoma, stage IV", "Malignant melanoma"]. Forms shorter than 8 characters are
    dropped: too short a quote proves nothing.
    """
    forms = [name]
    base = re.sub(r"\s*\([^)]*\)", "", name).strip()
    forms.append(base)
    forms.append(re.split(r"[,;:]", base)[0].strip())
    out: list[str] = []
    for form in forms:
        if len(form) >= 8 and form.lower() not in (f.lower() for f in out):
            out.append(form)
    return out


def _find_in_notes(tools: Tools, name: str) -> tuple[str, str] | None:
    """A verbatim mention of a coded condition in a permitted note, as (chunk id, quote)."""
    for form in condition_variants(name):
        pattern = re.compile(r"\b" + re.escape(form) + r"\b", re.IGNORECASE)
        for res in tools.search(form, k=5):
            m = pattern.search(res.chunk.text)
            if m:
                return res.chunk.id, res.chunk.text[m.start():m.end()]
    return None


class OfflineBackend:
    name = "offline"
    model = MODEL_ID

    def run(self, task: TaskSpec, tools: Tools, *, question: str | None, limits: Limits) -> BackendResult:
        if task.name == "summary":
            return self._summary(task, tools)
        if task.name == "question":
            return self._question(tools, question or "")
        if task.name == "irae":
            from app.agent.irae import screen

            return screen(tools)
        raise ValueError(task.name)

    def _summary(self, task: TaskSpec, tools: Tools) -> BackendResult:
        sentences: list[ProposedSentence] = []
        seen: set[str] = set()
        for cond in tools.conditions():
            name = cond.get("display", "")
            if len(name) < 4:
                continue
            quote = _find_in_notes(tools, name)
            status = cond.get("status", "active")
            sentences.append(ProposedSentence(
                text=f"Problem list ({status}): {name}.", evidence=(quote,) if quote else ()))
        picked: list[tuple[str, SearchResult, str]] = []
        for query in task.queries:
            qterms = _terms(query)
            scored = []
            for res, sent in candidate_sentences(tools.search(query, k=4)):
                overlap = len(qterms & _terms(sent))
                boost = 1 if (res.chunk.section or "").lower().startswith(_BOOST_SECTIONS) else 0
                scored.append((overlap + boost, -len(sent), res, sent))
            scored.sort(key=lambda t: (-t[0], t[1], t[2].chunk.id))
            for score, _neg, res, sent in scored[:2]:
                key = sent.lower()
                if score <= 0 or key in seen:
                    continue
                seen.add(key)
                picked.append((tools.document_date(res.chunk.document_id) or "", res, sent))
        picked.sort(key=lambda t: t[0], reverse=True)
        for date, res, sent in picked[:10]:
            prefix = f"[{date[:10]}] " if date else ""
            sentences.append(ProposedSentence(text=prefix + sent, evidence=((res.chunk.id, sent),)))
        return BackendResult(sentences=sentences, turns=1)

    def _question(self, tools: Tools, question: str) -> BackendResult:
        qterms = _terms(question)
        results = tools.search(question, k=6) if qterms else []
        scored = []
        for res, sent in candidate_sentences(results):
            overlap = len(qterms & _terms(sent))
            scored.append((overlap / max(1, len(qterms)), res, sent))
        scored.sort(key=lambda t: (-t[0], t[1].chunk.id))
        best = [t for t in scored if t[0] >= 0.34][:3]
        if not best:
            return BackendResult(sentences=[], answer_found=False,
                                 notes=["The permitted record does not contain an answer to this question."])
        sentences = []
        for _score, res, sent in best:
            date = tools.document_date(res.chunk.document_id) or ""
            prefix = f"[{date[:10]}] " if date else ""
            sentences.append(ProposedSentence(text=prefix + sent, evidence=((res.chunk.id, sent),)))
        return BackendResult(sentences=sentences)
