"""``python -m app eval``: the gold-set figures through the real pipeline, and the scoring itself."""

from __future__ import annotations

import json

from click.testing import CliRunner

from app.cli import main
from app.monitoring.evaluation import irae_figures


def test_scoring_counts_patients_events_and_grades():
    gold = [{"patient": "a", "irae_detected": True, "events": [{"organ": "hepatic", "ctcae_grade": 3}]},
            {"patient": "b", "irae_detected": False, "events": []}]
    found = {"a": {"findings": {"irae_detected": True, "events": [{"organ": "hepatic", "ctcae_grade": 2},
                                                                   {"organ": "skin", "ctcae_grade": 1}]}},
             "b": {"findings": {"irae_detected": True, "events": [{"organ": "skin", "ctcae_grade": 1}]}}}
    f = irae_figures(gold, found)
    assert f["patient_precision"] == 0.5 and f["patient_recall"] == 1.0
    assert f["event_precision"] == 1 / 3 and f["event_recall"] == 1.0 and f["grade_agreement"] == 0.0


def test_eval_cli_prints_the_offline_gold_figures():
    result = CliRunner().invoke(main, ["eval", "--no-retrieval"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)["irae"]
    assert figures["counts"]["patients"] == 14 and figures["backend"] == "offline"
    assert min(figures[k] for k in ("patient_precision", "patient_recall", "event_precision",
                                    "event_recall")) >= 0.85
