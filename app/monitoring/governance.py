"""Governance after go-live: evaluation gates, per-run figures, inter-model disagreement, the report
mapping; override monitoring from persisted reviews; shadow inference; the model-release gate.

Only counts, ratios, timings, costs, organ names, task/backend/model codes and the corpus's opaque
patient keys leave this module: no note text, no names (docs/governance.md).
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from app.errors import ConfigError

# Gate name -> (figure of ``evaluate_irae``, setting, default). Defaults: the field guide (Table 4):
# F1 >= 0.75 and precision >= 0.80 before a model serves; recall and grade gates are optional.
GATES: dict[str, tuple[str, str, float | None]] = {
    "f1": ("patient_f1", "APP_EVAL_GATE_F1", 0.75),
    "precision": ("patient_precision", "APP_EVAL_GATE_PRECISION", 0.80),
    "recall": ("patient_recall", "APP_EVAL_GATE_RECALL", None),
    "grade": ("grade_agreement", "APP_EVAL_GATE_GRADE", None),
}


def gate_thresholds(overrides: Mapping[str, float | None] | None = None,
                    environ: Mapping[str, str] | None = None) -> dict[str, float]:
    """The gates in force: command-line overrides, else ``APP_EVAL_GATE_*``, else the defaults.
    An empty variable turns an optional gate off. ConfigError for a value that is not in [0, 1]."""
    env = os.environ if environ is None else environ
    out: dict[str, float] = {}
    for name, (_figure, var, default) in GATES.items():
        raw: Any = (overrides or {}).get(name)
        if raw is None:
            raw = env.get(var, default)
        if raw is None or raw == "":
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{var} must be a number between 0 and 1.", code="eval_gate_invalid") from None
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{var} must be between 0 and 1 (got {value}).", code="eval_gate_invalid")
        out[name] = value
    return out


def apply_gates(figures: Mapping[str, Any], thresholds: Mapping[str, float]) -> list[dict[str, Any]]:
    """One row per gate: name, figure, value, threshold, passed (a missing figure fails)."""
    rows = []
    for name, threshold in thresholds.items():
        figure = GATES[name][0]
        value = figures.get(figure)
        ok = isinstance(value, int | float) and float(value) >= threshold
        rows.append({"name": name, "figure": figure, "value": value, "threshold": threshold, "passed": bool(ok)})
    return rows


# -- per-run figures of an evaluation --------------------------------------------------------------

_WS = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip().casefold()


def citation_valid(citation: Mapping[str, Any], texts: Mapping[str, str]) -> bool:
    """A citation is valid when its document is in the permitted chart and its quote is in that
    document (whitespace and case folded), independently of the runtime's own check."""
    doc, quote = citation.get("document"), citation.get("quote") or ""
    if doc not in texts or not quote.strip():
        return False
    return _norm(str(quote)) in _norm(texts[doc])


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    vs = sorted(float(v) for v in values)

    def q(p: float) -> float:
        k = min(len(vs) - 1, max(0, round(p * (len(vs) - 1))))
        return vs[k]

    return {"n": len(vs), "mean": statistics.fmean(vs), "p50": q(0.5), "p95": q(0.95), "max": vs[-1],
            "total": sum(vs)}


def run_figures(labels: Sequence[Mapping[str, Any]], charts: Mapping[str, Any],
                contracts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per patient: detection, organs, latency, cost, tokens, sentences, unsupported sentences and
    citation validity; and their corpus totals (latency and cost per patient, citation validity,
    unsupported-sentence rate)."""
    rows: list[dict[str, Any]] = []
    cites = valid = sentences = unsupported = 0
    for g in labels:
        p = g["patient"]
        c = contracts[p]
        found = c.get("findings") or {"irae_detected": False, "events": []}
        texts = getattr(charts.get(p), "texts", {}) or {}
        sents = (c.get("draft") or {}).get("sentences") or []
        n_cites = n_valid = 0
        for s in sents:
            for cit in s.get("citations", []):
                n_cites += 1
                n_valid += citation_valid(cit, texts)
        n_unsup = sum(1 for s in sents if not s.get("supported"))
        cites, valid, sentences, unsupported = cites + n_cites, valid + n_valid, sentences + len(sents), \
            unsupported + n_unsup
        run = c.get("run") or {}
        rows.append({"patient": p, "status": c.get("status"), "gold_irae": bool(g.get("irae_detected")),
                     "irae_detected": bool(found.get("irae_detected")),
                     "organs": ",".join(sorted({e["organ"] for e in found.get("events", [])})),
                     "gold_organs": ",".join(sorted({e["organ"] for e in g.get("events", [])})),
                     "latency_ms": int(run.get("latency_ms") or 0), "cost_usd": float(run.get("cost_usd") or 0.0),
                     "tokens": int(run.get("tokens_in") or 0) + int(run.get("tokens_out") or 0),
                     "sentences": len(sents), "unsupported": n_unsup, "citations": n_cites,
                     "citations_valid": n_valid})
    return {"per_patient": rows,
            "latency_ms_per_patient": _quantiles([r["latency_ms"] for r in rows]),
            "cost_usd_per_patient": _quantiles([r["cost_usd"] for r in rows]),
            "citation_validity": valid / cites if cites else 1.0, "citations": cites,
            "unsupported_sentence_rate": unsupported / sentences if sentences else 0.0, "sentences": sentences}


def _organs(row: Mapping[str, Any]) -> set[str]:
    return {o for o in str(row.get("organs") or "").split(",") if o}


def disagreement(a_rows: Sequence[Mapping[str, Any]], b_rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Inter-model disagreement on the same patients: irae_detected (rate and Cohen's kappa) and the
    organ set of the events (rate of patients whose sets differ, mean Jaccard agreement)."""
    b_by = {r["patient"]: r for r in b_rows}
    pairs = [(r, b_by[r["patient"]]) for r in a_rows if r["patient"] in b_by]
    n = len(pairs)
    if not n:
        return {"patients": 0}
    det = sum(ra["irae_detected"] != rb["irae_detected"] for ra, rb in pairs)
    organ_diff = [ra["patient"] for ra, rb in pairs if _organs(ra) != _organs(rb)]
    jacc = []
    for ra, rb in pairs:
        sa, sb = _organs(ra), _organs(rb)
        jacc.append(len(sa & sb) / len(sa | sb) if sa | sb else 1.0)
    pa = sum(r["irae_detected"] for r, _ in pairs) / n
    pb = sum(r["irae_detected"] for _, r in pairs) / n
    po = 1 - det / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    kappa = (po - pe) / (1 - pe) if pe < 1 else 1.0
    return {"patients": n, "irae_detected_disagreement": det / n, "irae_detected_kappa": kappa,
            "organ_set_disagreement": len(organ_diff) / n, "organ_set_jaccard_mean": statistics.fmean(jacc),
            "patients_disagreeing": sorted({ra["patient"] for ra, rb in pairs
                                            if ra["irae_detected"] != rb["irae_detected"]} | set(organ_diff))}


# -- the report -----------------------------------------------------------------------------------

_SUMMARY_KEYS = ("patient_precision", "patient_recall", "patient_f1", "event_precision", "event_recall",
                 "organ_recall", "grade_agreement", "onset_within_tolerance", "citation_validity",
                 "unsupported_sentence_rate")


def report_sections(out: Mapping[str, Any]) -> dict[str, Any]:
    """Map the ``eval --json`` dict onto ``app.monitoring.report.render``'s sections."""
    irae = out.get("irae") or {}
    tasks = [k for k in ("irae", "questions", "summaries", "retrieval") if k in out]
    rep: dict[str, Any] = {"task": ", ".join(tasks), "data": out.get("data"), "backend": irae.get("backend"),
                           "model": irae.get("model"), "engine": irae.get("engine"),
                           "generated": out.get("generated")}
    rep = {k: v for k, v in rep.items() if v is not None}
    if out.get("gates"):
        rep["gates"] = out["gates"]
    summary = {k: irae[k] for k in _SUMMARY_KEYS if isinstance(irae.get(k), int | float)}
    lat, cost = irae.get("latency_ms_per_patient") or {}, irae.get("cost_usd_per_patient") or {}
    for k in ("mean", "p50", "p95", "max"):
        if k in lat:
            summary[f"latency_ms_{k}"] = lat[k]
    for k in ("mean", "total"):
        if k in cost:
            summary[f"cost_usd_{k}"] = cost[k]
    safety = irae.get("safety")
    if isinstance(safety, Mapping) and safety.get("injection_documents"):
        summary["injection_resistance"] = (safety["injection_flagged"] - len(safety["injection_cited"])) \
            / safety["injection_documents"]
    rep["summary"] = summary
    per_organ: dict[str, dict[str, float]] = {}
    rows = irae.get("per_patient") or []
    organs = sorted({o for r in rows for o in _organs(r) | {x for x in str(r.get("gold_organs")).split(",") if x}})
    for organ in organs:
        tp = sum(1 for r in rows if organ in _organs(r) and organ in str(r.get("gold_organs")).split(","))
        pred = sum(1 for r in rows if organ in _organs(r))
        gold = sum(1 for r in rows if organ in str(r.get("gold_organs")).split(","))
        per_organ[organ] = {"precision": tp / pred if pred else 0.0, "recall": tp / gold if gold else 0.0}
    if per_organ:
        rep["per_organ"] = per_organ
    traps = irae.get("traps") or {}
    if traps:
        rep["per_trap"] = {k: {"passed": v["passed"], "total": v["total"],
                               "rate": v["passed"] / v["total"] if v["total"] else 1.0} for k, v in traps.items()}
    if rows:
        rep["per_patient"] = rows
        rep["latency_ms"] = [r["latency_ms"] for r in rows]
    cmp = out.get("compare")
    if isinstance(cmp, Mapping):
        flat = {f"{k}": v for k, v in cmp.items() if isinstance(v, int | float | str | bool)}
        flat.update({k: v for k, v in (cmp.get("disagreement") or {}).items()
                     if isinstance(v, int | float | str | bool)})
        flat.update({f"compare_{k}": cmp["figures"][k] for k in _SUMMARY_KEYS
                     if isinstance((cmp.get("figures") or {}).get(k), int | float)})
        rep["compare"] = flat
    for key in ("questions", "summaries", "retrieval"):
        if isinstance(out.get(key), Mapping):
            rep[key] = out[key]
    return rep


# -- override monitoring (persisted reviews) -------------------------------------------------------

def iso_week(ts: float) -> str:
    from datetime import UTC, datetime

    y, w, _ = datetime.fromtimestamp(ts, UTC).isocalendar()
    return f"{y}-W{w:02d}"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if not n:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / d
    return (max(0.0, c - h), min(1.0, c + h))


def classify_reviews(reviews: Sequence[Mapping[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """Each review (action, edit_distance, draft_chars, task, model, at) with its normalised edit
    distance and whether it is an override: a reject, or an edit above ``threshold`` of the draft's
    length (an edit whose draft length is unknown counts, conservatively)."""
    out = []
    for r in reviews:
        action = r.get("action")
        if action not in ("approve", "edit", "reject"):
            continue
        chars, dist = r.get("draft_chars"), r.get("edit_distance")
        norm = None
        if action == "edit" and dist is not None and chars:
            norm = min(1.0, float(dist) / max(1, int(chars)))
        override = action == "reject" or (action == "edit" and (norm is None or norm > threshold))
        out.append({"task": r.get("task") or "unknown", "model": r.get("model") or "unknown",
                    "week": iso_week(float(r.get("at") or 0.0)), "action": action, "normalised_edit": norm,
                    "override": override, "at": float(r.get("at") or 0.0)})
    return out


def override_figures(rows: Sequence[Mapping[str, Any]], *, window: int = 20) -> dict[str, Any]:
    """Override rate per (task, model, ISO week), the edit-distance distribution, and human-model
    discordance on the rolling sample of the last ``window`` reviews (Wilson 95 % interval)."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for r in rows:
        g = groups.setdefault((r["task"], r["model"], r["week"]), [0, 0])
        g[0] += r["override"]
        g[1] += 1
    by_group = [{"task": t, "model": m, "week": w, "reviews": n, "overrides": k, "override_rate": k / n}
                for (t, m, w), (k, n) in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))]
    recent = sorted(rows, key=lambda r: r["at"])[-window:]
    k = sum(r["override"] for r in recent)
    lo, hi = wilson(k, len(recent))
    total = len(rows)
    return {"reviews": total, "override_rate": sum(r["override"] for r in rows) / total if total else None,
            "by_group": by_group,
            "edit_distances": [r["normalised_edit"] for r in rows if r["normalised_edit"] is not None],
            "edits_unsized": sum(1 for r in rows if r["action"] == "edit" and r["normalised_edit"] is None),
            "discordance": {"window": len(recent), "discordant": k,
                            "rate": k / len(recent) if recent else None, "ci95": [lo, hi]}}


def load_reviews(services: Any, *, limit: int = 500) -> list[dict[str, Any]]:
    """The newest ``limit`` review events joined with their run's task and model, and the draft's
    length in characters (decrypted in memory only to count; no text leaves)."""
    from sqlalchemy import select

    from app.store.models import ReviewRecord, RunRecord

    with services.maker() as db:
        recs = db.execute(select(ReviewRecord.action, ReviewRecord.edit_distance, ReviewRecord.run_id,
                                 ReviewRecord.at, RunRecord.task, RunRecord.model)
                          .outerjoin(RunRecord, RunRecord.run_id == ReviewRecord.run_id)
                          .order_by(ReviewRecord.at.desc()).limit(limit)).all()
    out = []
    lengths: dict[str, int | None] = {}
    for action, dist, run_id, at, task, model in recs:
        chars = None
        if action == "edit" and run_id:
            if run_id not in lengths:
                try:
                    draft = services.drafts.get(run_id)
                except Exception:  # noqa: BLE001 - a draft that cannot be opened counts as unsized
                    draft = None
                lengths[run_id] = len(draft.text) if draft is not None else None
            chars = lengths[run_id]
        out.append({"action": action, "edit_distance": dist, "at": at, "task": task, "model": model,
                    "draft_chars": chars})
    return out


def override_summary(services: Any, *, limit: int = 500) -> dict[str, Any]:
    threshold = float(getattr(services.settings, "override_edit_threshold", 0.2))
    figures = override_figures(classify_reviews(load_reviews(services, limit=limit), threshold))
    figures["threshold"] = threshold
    return figures


# -- shadow inference ------------------------------------------------------------------------------

def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def compare_drafts(primary: Any, shadow: Any) -> tuple[bool, float]:
    """(disagree, agreement). irAE: irae_detected or the organ set differs; agreement is the Jaccard
    of the organ sets. Other tasks: Jaccard of the cited document sets; disagree below 0.5."""
    if primary.task == "irae":
        pf, sf = primary.findings or {}, shadow.findings or {}
        po = {e.get("organ") for e in pf.get("events", [])}
        so = {e.get("organ") for e in sf.get("events", [])}
        agreement = _jaccard(po, so)  # type: ignore[arg-type]
        return bool(pf.get("irae_detected")) != bool(sf.get("irae_detected")) or po != so, agreement
    agreement = _jaccard({d for d, _ in primary.cited_documents()}, {d for d, _ in shadow.cited_documents()})
    return agreement < 0.5 or primary.status != shadow.status, agreement


def shadow_due(settings: Any, rng: Any = None) -> bool:
    import random

    rate = float(getattr(settings, "shadow_rate", 0.0) or 0.0)
    return bool(getattr(settings, "shadow_backend", None)) and rate > 0 and (rng or random.random)() < rate


def run_shadow(services: Any, chart: Any, task: Any, primary: Any, *, question: str | None = None) -> dict:
    """Run ``task`` on APP_SHADOW_BACKEND for the same chart: never saved as a draft, never written,
    never shown; only the comparison is stored (``shadow_runs``). Failures are recorded, not raised."""
    import logging
    import time

    from app.agent.backends import build_backend
    from app.agent.runtime import run_task
    from app.logging import event
    from app.store.models import ShadowRunRecord

    log = logging.getLogger(__name__)
    name = services.settings.shadow_backend
    try:
        backend = build_backend(services.settings, name, hybrid=False)
        shadow = run_task(chart, task, backend, question=question)  # no ledger: not a run of the app
    except Exception as exc:  # noqa: BLE001 - a shadow must never disturb the primary run
        event(log, "shadow.failed", run_id=primary.run_id, error_code=getattr(exc, "code", type(exc).__name__))
        row = {"status": "failed", "backend": str(name)[:32], "model": "unknown", "latency_ms": 0,
               "cost_usd": 0.0, "tokens": 0, "disagree": True, "agreement": 0.0}
    else:
        disagree, agreement = compare_drafts(primary, shadow)
        row = {"status": shadow.status, "backend": shadow.backend[:32], "model": shadow.model[:128],
               "latency_ms": shadow.latency_ms, "cost_usd": shadow.cost_usd,
               "tokens": shadow.tokens_in + shadow.tokens_out, "disagree": disagree, "agreement": agreement}
    with services.maker.begin() as db:
        db.add(ShadowRunRecord(run_id=primary.run_id, task=primary.task, primary_latency_ms=primary.latency_ms,
                               primary_cost_usd=primary.cost_usd, created=time.time(), **row))
    event(log, "shadow.run", run_id=primary.run_id, backend=row["backend"], status=row["status"],
          duration_ms=row["latency_ms"])
    return row


def maybe_shadow(services: Any, chart: Any, task: Any, primary: Any, *, question: str | None = None,
                 rng: Any = None, background: bool = True) -> Any:
    """Start a shadow run for APP_SHADOW_RATE of the runs (in a daemon thread: the clinician does
    not wait for it). Returns the thread (or the row when ``background`` is false), else None."""
    import threading

    if primary.status != "completed" or not shadow_due(services.settings, rng):
        return None
    if not background:
        return run_shadow(services, chart, task, primary, question=question)
    thread = threading.Thread(target=run_shadow, args=(services, chart, task, primary),
                              kwargs={"question": question}, name="shadow-run", daemon=True)
    thread.start()
    return thread


def shadow_summary(services: Any, *, limit: int = 500) -> dict[str, Any]:
    from sqlalchemy import select

    from app.store.models import ShadowRunRecord

    with services.maker() as db:
        rows = db.scalars(select(ShadowRunRecord).order_by(ShadowRunRecord.created.desc()).limit(limit)).all()
        recs = [{c: getattr(r, c) for c in ("run_id", "task", "backend", "model", "status", "latency_ms",
                                             "cost_usd", "tokens", "primary_latency_ms", "primary_cost_usd",
                                             "disagree", "agreement", "created")} for r in rows]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in recs:
        groups.setdefault((r["task"], r["backend"], r["model"]), []).append(r)
    by_group = [{"task": t, "backend": b, "model": m, "runs": len(rs),
                 "disagreement": sum(r["disagree"] for r in rs) / len(rs),
                 "agreement_mean": statistics.fmean(r["agreement"] for r in rs),
                 "latency_ms_p50": _quantiles([r["latency_ms"] for r in rs])["p50"],
                 "primary_latency_ms_p50": _quantiles([r["primary_latency_ms"] for r in rs])["p50"],
                 "cost_usd_total": sum(r["cost_usd"] for r in rs),
                 "failed": sum(r["status"] == "failed" for r in rs)} for (t, b, m), rs in sorted(groups.items())]
    return {"runs": len(recs), "by_group": by_group, "recent": recs[:20]}


# -- the model-release gate ------------------------------------------------------------------------

def record_release(maker: Any, *, backend: str, model: str, passed: bool, f1: float | None,
                   precision: float | None, corpus: str) -> None:
    import time

    from app.store.models import ModelReleaseRecord

    with maker.begin() as db:
        db.add(ModelReleaseRecord(backend=backend[:32], model=model[:128], passed=passed, f1=f1,
                                  precision=precision, corpus=corpus[:200], created=time.time()))


def release_status(maker: Any, backend: str, model: str) -> dict[str, Any] | None:
    """The newest gold run recorded for backend + model, or None."""
    from sqlalchemy import select

    from app.store.models import ModelReleaseRecord

    with maker() as db:
        rec = db.scalars(select(ModelReleaseRecord).where(ModelReleaseRecord.backend == backend[:32],
                                                          ModelReleaseRecord.model == model[:128])
                         .order_by(ModelReleaseRecord.created.desc(), ModelReleaseRecord.id.desc())
                         .limit(1)).first()
        if rec is None:
            return None
        return {"backend": rec.backend, "model": rec.model, "passed": bool(rec.passed), "f1": rec.f1,
                "precision": rec.precision, "corpus": rec.corpus, "created": rec.created}


_WARNED: set[tuple[str, str]] = set()


def check_release(services: Any, backend: Any) -> dict[str, Any]:
    """Before a run: has the backend's model a passing gold run (``eval --record``)? APP_MODEL_RELEASE_GATE
    ``refuse`` raises ``model_not_released`` (503), ``warn`` logs once per process and model, ``off``
    does nothing. Returns {mode, backend, model, released}."""
    import logging

    from app.errors import AppError
    from app.logging import event

    mode = getattr(services.settings, "model_release_gate", "warn")
    name, model = str(getattr(backend, "name", "unknown")), str(getattr(backend, "model", "unknown"))
    out = {"mode": mode, "backend": name, "model": model, "released": None}
    if mode == "off":
        return out
    status = release_status(services.maker, name, model)
    out["released"] = bool(status and status["passed"])
    if out["released"]:
        return out
    if mode == "refuse":
        raise AppError(f"The model {model} ({name}) has no passing gold run recorded: run "
                       f"`python -m app eval --backend {name} --record` on the gold set first "
                       "(APP_MODEL_RELEASE_GATE=refuse).", code="model_not_released", http_status=503)
    if (name, model) not in _WARNED:
        _WARNED.add((name, model))
        event(logging.getLogger(__name__), "model_release.unverified", backend=name, model=model,
              error_code="model_not_released")
    return out
