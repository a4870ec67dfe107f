"""Evaluation on the gold sets: the irAE screen (per patient, per event, grade) and retrieval quality.

``python -m app eval`` runs both over ``synthetic_data/`` (or another directory with the same
layout: ``bundles/*.json``, ``gold/irae.json``, ``gold/retrieval_queries.json``) through the real
pipeline (attachments, policy, chunking, index, agent, citation check) without a server, and
prints the figures. Only counts and ratios leave this module: no note text, no names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.agent.backends import Backend
from app.agent.runtime import run_task
from app.agent.tasks import TASKS
from app.retrieval.bundles import BundleClient
from app.retrieval.indexer import PatientChart, load_chart
from app.retrieval.policy import RolePolicy
from app.smart.scopes import Grants

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "synthetic_data"


def _ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


def irae_figures(labels: list[dict], contracts: Mapping[str, dict]) -> dict[str, Any]:
    """Precision/recall per patient (irae_detected) and per event (patient + organ); grade agreement."""
    tp = fp = fn = etp = efp = efn = graded = agree = 0
    for g in labels:
        found = contracts[g["patient"]]["findings"] or {"irae_detected": False, "events": []}
        predicted, truth = bool(found["irae_detected"]), bool(g["irae_detected"])
        tp += predicted and truth
        fp += predicted and not truth
        fn += truth and not predicted
        pred = {e["organ"]: e for e in found["events"]}
        gold = {e["organ"]: e for e in g["events"]}
        etp += len(pred.keys() & gold.keys())
        efp += len(pred.keys() - gold.keys())
        efn += len(gold.keys() - pred.keys())
        for organ in pred.keys() & gold.keys():
            graded += 1
            agree += pred[organ]["ctcae_grade"] == gold[organ]["ctcae_grade"]
    return {"patient_precision": _ratio(tp, tp + fp), "patient_recall": _ratio(tp, tp + fn),
            "event_precision": _ratio(etp, etp + efp), "event_recall": _ratio(etp, etp + efn),
            "grade_agreement": _ratio(agree, graded),
            "counts": {"patients": len(labels), "tp": tp, "fp": fp, "fn": fn, "events_tp": etp,
                       "events_fp": efp, "events_fn": efn, "graded": graded}}


def charts_for(data: Path, patients: list[str], embedder: Any, *,
               role: str = "clinician") -> dict[str, PatientChart]:
    client = BundleClient.from_dir(data / "bundles")
    grants, policy = Grants.parse("patient/*.rs"), RolePolicy.default()
    return {p: load_chart(client, p, grants=grants, role=role, policy=policy, embedder=embedder)  # type: ignore[arg-type]
            for p in patients}


def evaluate_irae(backend: Backend, embedder: Any, data: Path = DEFAULT_DATA) -> dict[str, Any]:
    labels = json.loads((data / "gold" / "irae.json").read_text(encoding="utf-8"))
    charts = charts_for(data, [g["patient"] for g in labels], embedder)
    contracts = {p: run_task(chart, TASKS["irae"], backend).contract(None) for p, chart in charts.items()}
    figures = irae_figures(labels, contracts)
    figures["backend"], figures["model"] = backend.name, getattr(backend, "model", None)
    return figures


def evaluate_retrieval(embedder: Any, data: Path = DEFAULT_DATA) -> dict[str, Any]:
    from app.retrieval.quality import evaluate, load_queries

    queries = load_queries(data / "gold" / "retrieval_queries.json")
    charts = charts_for(data, sorted({q.patient for q in queries}), embedder)
    out: dict[str, Any] = {"queries": len(queries)}
    for mode in ("dense", "sparse", "hybrid"):
        score, _per_query = evaluate(charts, queries, mode)
        out[mode] = score.as_dict()
    return out
