"""Chart questions and summaries scored on a labelled corpus (e.g. ``eval_corpora/synthea``).

Layout of ``data``: ``bundles/*.json`` (one FHIR bundle per patient; ``BundleClient`` resolves
Synthea's ``urn:uuid:`` references), ``gold/questions.json`` and ``gold/summaries.json``. Charts are built through the
real pipeline (attachments, policy, chunking, index; no server) as ``app.monitoring.evaluation``
does, and every task runs through ``run_task`` (citations verified).

A question is *correct* when it was answered (``answer_found``), the answer text contains the
expected values (case-insensitive; ``{"all": [...]}`` every one, ``{"any": [...]}`` one of
them) and a verified citation names ``answer_document`` or one of ``acceptable_documents``; a
question whose gold says ``answer_found: false`` is correct when the draft says not found.
A summary fact is *recalled* when the summary text contains its expected values, and
*cited* when one sentence holds them and cites the fact's document.

Only counts, ratios and timings leave this module: no note text, no names.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from app.agent.backends import Backend
from app.agent.runtime import Draft, run_task
from app.agent.tasks import TASKS
from app.errors import AppError
from app.retrieval.bundles import BundleClient
from app.retrieval.indexer import PatientChart, load_chart
from app.retrieval.policy import RolePolicy
from app.smart.scopes import Grants


class EvalDataError(AppError):
    code = "eval_data_invalid"


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def load_charts(data: Path, patients: Iterable[str], embedder: Any, *,
                role: str = "clinician", cache: Any = None) -> dict[str, PatientChart]:
    """Each patient's permitted chart from ``data/bundles``, through the real indexing pipeline
    (``cache``: an ``EmbeddingCache``, so repeated runs do not re-embed)."""
    paths = sorted((data / "bundles").glob("*.json"))
    if not paths:
        raise EvalDataError(f"No bundles under {data / 'bundles'}.")
    try:
        client = BundleClient.from_paths(paths)
    except (OSError, ValueError) as exc:
        raise EvalDataError(f"Cannot read the bundles: {type(exc).__name__}.") from None
    grants, policy = Grants.parse("patient/*.rs"), RolePolicy.default()
    known = set(client.patients())
    missing = sorted(set(patients) - known)
    if missing:
        raise EvalDataError(f"{len(missing)} gold patient(s) have no bundle.")
    return {p: load_chart(client, p, grants=grants, role=role, policy=policy, embedder=embedder,  # type: ignore[arg-type]
                          cache=cache)
            for p in sorted(set(patients))}


def _gold(data: Path, name: str) -> list[dict]:
    path = data / "gold" / name
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalDataError(f"Cannot read {path}: {type(exc).__name__}.") from None
    if not isinstance(items, list):
        raise EvalDataError(f"{path.name} must be a JSON list.")
    return items


def values_match(text: str, expected: Mapping[str, list[str]] | list[str] | None) -> bool:
    """``{"all": [...]}``: every value in ``text``; ``{"any": [...]}``: one; a list means all."""
    low = text.lower()
    if not expected:
        return True
    if isinstance(expected, list):
        return all(str(v).lower() in low for v in expected)
    ok = True
    if "all" in expected:
        ok = ok and all(str(v).lower() in low for v in expected["all"])
    if "any" in expected:
        ok = ok and any(str(v).lower() in low for v in expected["any"])
    return ok


def score_question(item: Mapping[str, Any], draft: Draft) -> dict[str, bool]:
    """The verdicts for one question (all booleans; no text)."""
    cited = {doc for doc, _v in draft.cited_documents()}
    if not item.get("answer_found", True):
        honest = not draft.answer_found and draft.status == "completed"
        return {"correct": honest, "value": honest, "cited": honest, "answered": draft.answer_found}
    wanted = {item.get("answer_document")} | set(item.get("acceptable_documents") or [])
    value = draft.answer_found and values_match(draft.text, item.get("expected_values"))
    cite = bool(cited & wanted)
    newest = item.get("answer_document") in cited
    return {"correct": bool(value and cite), "value": bool(value), "cited": cite, "newest": newest,
            "answered": draft.answer_found}


def evaluate_questions(backend: Backend, embedder: Any, data: Path, *,
                       charts: Mapping[str, PatientChart] | None = None) -> dict[str, Any]:
    """Run the question task for every gold question; figures overall and per category.
    ``gold/questions_extra.json``, when present, is scored too and reported apart (``extra``), so
    the figures of ``questions.json`` stay comparable."""
    items = _gold(data, "questions.json")
    extra = _gold(data, EXTRA_QUESTIONS) if (data / "gold" / EXTRA_QUESTIONS).exists() else []
    charts = charts or load_charts(data, [q["patient"] for q in items + extra], embedder)
    out = _score_questions(backend, items, charts)
    if extra:
        out["extra"] = _score_questions(backend, extra, charts)
    return out


EXTRA_QUESTIONS = "questions_extra.json"


def _score_questions(backend: Backend, items: list[dict], charts: Mapping[str, PatientChart]) -> dict[str, Any]:
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    statuses: dict[str, int] = defaultdict(int)
    latencies: list[int] = []
    for item in items:
        draft = run_task(charts[item["patient"]], TASKS["question"], backend, question=item["question"])
        statuses[draft.status] += 1
        latencies.append(draft.latency_ms)
        verdict = score_question(item, draft)
        for cat in (item.get("category", "other"), "all"):
            row = per[cat]
            row["n"] += 1
            for key, ok in verdict.items():
                row[key] += int(ok)
    categories = {cat: {"n": row["n"], "correct": row["correct"], "accuracy": _ratio(row["correct"], row["n"]),
                        "value_ok": row["value"], "cited_ok": row["cited"], "answered": row["answered"]}
                  for cat, row in sorted(per.items()) if cat != "all"}
    total = per["all"]
    return {"backend": backend.name, "model": getattr(backend, "model", None), "questions": total["n"],
            "correct": total["correct"], "accuracy": _ratio(total["correct"], total["n"]),
            "value_ok": total["value"], "cited_ok": total["cited"], "newest_cited": total["newest"],
            "statuses": dict(statuses), "per_category": categories,
            "latency_ms": {"max": max(latencies, default=0),
                           "median": sorted(latencies)[len(latencies) // 2] if latencies else 0}}


def _fact_hits(draft: Draft, fact: Mapping[str, Any]) -> tuple[bool, bool]:
    expected = fact.get("expected_values") or [fact.get("value", "")]
    recalled = values_match(draft.text, expected)
    cited = any(values_match(s.text, expected) and any(c.document == fact.get("document") for c in s.citations)
                for s in draft.sentences)
    return recalled, cited


def evaluate_summaries(backend: Backend, embedder: Any, data: Path, *,
                       charts: Mapping[str, PatientChart] | None = None) -> dict[str, Any]:
    """Run the summary task per gold chart: completion status, fact recall (overall and per category)."""
    items = _gold(data, "summaries.json")
    charts = charts or load_charts(data, [s["patient"] for s in items], embedder)
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    statuses: dict[str, int] = defaultdict(int)
    largest = {"notes": -1, "latency_ms": 0}
    unsupported = sentences = 0
    for item in items:
        chart = charts[item["patient"]]
        started = time.monotonic()
        draft = run_task(chart, TASKS["summary"], backend)
        elapsed = int((time.monotonic() - started) * 1000)
        statuses[draft.status] += 1
        sentences += len(draft.sentences)
        unsupported += draft.unsupported
        if len(chart.documents) > largest["notes"]:
            largest = {"notes": len(chart.documents), "latency_ms": elapsed}
        for fact in item.get("facts", []):
            recalled, cited = _fact_hits(draft, fact)
            for cat in (fact.get("category", "other"), "all"):
                per[cat]["n"] += 1
                per[cat]["recalled"] += int(recalled)
                per[cat]["cited"] += int(cited)
    categories = {cat: {"n": row["n"], "recall": _ratio(row["recalled"], row["n"]),
                        "cited_recall": _ratio(row["cited"], row["n"])}
                  for cat, row in sorted(per.items()) if cat != "all"}
    total = per["all"]
    return {"backend": backend.name, "model": getattr(backend, "model", None), "charts": len(items),
            "statuses": dict(statuses), "completed": statuses.get("completed", 0),
            "facts": total["n"], "recall": _ratio(total["recalled"], total["n"]),
            "cited_recall": _ratio(total["cited"], total["n"]), "per_category": categories,
            "sentences": sentences, "unsupported_sentences": unsupported, "largest_chart": largest}


def evaluate_chart_tasks(backend: Backend, embedder: Any, data: Path) -> dict[str, Any]:
    """Questions and summaries on one corpus, charts built once."""
    patients = [q["patient"] for q in _gold(data, "questions.json")]
    if (data / "gold" / EXTRA_QUESTIONS).exists():
        patients += [q["patient"] for q in _gold(data, EXTRA_QUESTIONS)]
    patients += [s["patient"] for s in _gold(data, "summaries.json")]
    charts = load_charts(data, patients, embedder)
    return {"questions": evaluate_questions(backend, embedder, data, charts=charts),
            "summaries": evaluate_summaries(backend, embedder, data, charts=charts)}
