"""`python -m app eval` gates (APP_EVAL_GATE_*): exit 0 when the engine passes, 1 when a gate fails,
2 for a gate that is not a ratio; `--compare` disagreement; the figures the gates read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from app.errors import ConfigError
from app.monitoring.governance import apply_gates, citation_valid, disagreement, gate_thresholds

DEV = Path(__file__).resolve().parents[2] / "eval_corpora" / "irae" / "dev"
PATIENTS = [f"irae-dev-0{i}" for i in range(1, 7)]  # three with an irAE, three without


def _corpus(tmp_path: Path, *, flip: bool = False) -> Path:
    """Six dev patients; ``flip`` inverts the gold label of the irAE-free ones (FP for the engine)."""
    (tmp_path / "bundles").mkdir()
    (tmp_path / "gold").mkdir()
    for p in PATIENTS:
        shutil.copy(DEV / "bundles" / f"{p}.json", tmp_path / "bundles")
    gold = [g for g in json.loads((DEV / "gold" / "irae.json").read_text()) if g["patient"] in PATIENTS]
    if flip:
        for g in gold:
            if not g["irae_detected"]:
                g["irae_detected"], g["events"], g["traps"] = True, [{"organ": "renal", "ctcae_grade": 2}], []
            else:
                g["irae_detected"], g["events"], g["traps"] = False, [], []
    (tmp_path / "gold" / "irae.json").write_text(json.dumps(gold))
    return tmp_path


def _eval(*args: str, env: dict | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["eval", "--task", "irae", *args, "--json"], env=env or {})


def test_gates_default_to_the_field_guide_and_read_the_environment():
    assert gate_thresholds(environ={}) == {"f1": 0.75, "precision": 0.80}
    assert gate_thresholds(environ={"APP_EVAL_GATE_F1": "0.9", "APP_EVAL_GATE_RECALL": "0.7"}) == \
        {"f1": 0.9, "precision": 0.80, "recall": 0.7}
    assert gate_thresholds({"f1": 0.5}, environ={"APP_EVAL_GATE_F1": "0.9"})["f1"] == 0.5
    assert "precision" not in gate_thresholds(environ={"APP_EVAL_GATE_PRECISION": ""})
    for bad in ("1.5", "high"):
        with pytest.raises(ConfigError) as err:
            gate_thresholds(environ={"APP_EVAL_GATE_F1": bad})
        assert err.value.code == "eval_gate_invalid"


def test_apply_gates_fails_below_threshold_and_on_a_missing_figure():
    rows = apply_gates({"patient_f1": 0.74, "patient_precision": 0.8}, {"f1": 0.75, "precision": 0.8,
                                                                          "grade": 0.5})
    assert [(r["name"], r["passed"]) for r in rows] == [("f1", False), ("precision", True), ("grade", False)]


def test_the_engine_passes_its_gates_on_dev_patients(tmp_path):
    result = _eval("--data", str(_corpus(tmp_path)))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {g["name"] for g in out["gates"]} == {"f1", "precision"} and all(g["passed"] for g in out["gates"])
    irae = out["irae"]
    assert len(irae["per_patient"]) == 6 and irae["citations"] > 0
    assert irae["citation_validity"] == 1.0 and irae["unsupported_sentence_rate"] == 0.0
    assert irae["latency_ms_per_patient"]["n"] == 6 and irae["cost_usd_per_patient"]["total"] == 0.0


def test_a_failing_gate_exits_1(tmp_path):
    corpus = _corpus(tmp_path, flip=True)  # every prediction is now wrong
    result = _eval("--data", str(corpus))
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert {g["name"]: g["passed"] for g in out["gates"]} == {"f1": False, "precision": False}
    assert "eval gates failed: f1, precision" in result.stderr


def test_a_gate_set_above_what_the_engine_reaches_fails_from_the_environment(tmp_path):
    corpus = _corpus(tmp_path)
    # one gold irAE the notes do not support: the engine misses it (recall 3/4, F1 ~0.86)
    gold = json.loads((corpus / "gold" / "irae.json").read_text())
    gold[1]["irae_detected"], gold[1]["events"] = True, [{"organ": "renal", "ctcae_grade": 1}]
    (corpus / "gold" / "irae.json").write_text(json.dumps(gold))
    ok = _eval("--data", str(corpus), env={"APP_EVAL_GATE_F1": "0.5", "APP_EVAL_GATE_PRECISION": "0.5"})
    assert ok.exit_code == 0, ok.output
    fail = _eval("--data", str(corpus), env={"APP_EVAL_GATE_F1": "0.99"})
    assert fail.exit_code == 1
    assert [g for g in json.loads(fail.stdout)["gates"] if not g["passed"]][0]["name"] == "f1"
    assert _eval("--data", str(corpus), "--gate-f1", "2").exit_code == 2


def test_compare_reports_inter_model_disagreement(tmp_path):
    result = _eval("--data", str(_corpus(tmp_path)), "--compare", "offline")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)["compare"]["disagreement"]
    assert d["patients"] == 6 and d["irae_detected_disagreement"] == 0.0 and d["organ_set_jaccard_mean"] == 1.0


def test_disagreement_counts_detection_and_organ_sets():
    a = [{"patient": "x", "irae_detected": True, "organs": "hepatic"},
         {"patient": "y", "irae_detected": False, "organs": ""},
         {"patient": "z", "irae_detected": True, "organs": "endocrine,skin"}]
    b = [{"patient": "x", "irae_detected": True, "organs": "hepatic"},
         {"patient": "y", "irae_detected": True, "organs": "renal"},
         {"patient": "z", "irae_detected": True, "organs": "endocrine"}]
    d = disagreement(a, b)
    assert d["irae_detected_disagreement"] == pytest.approx(1 / 3)
    assert d["organ_set_disagreement"] == pytest.approx(2 / 3)
    assert d["organ_set_jaccard_mean"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert d["patients_disagreeing"] == ["y", "z"]


def test_citation_validity_checks_the_quote_in_the_permitted_document():
    texts = {"d1": "Patient has  Grade 2\ncolitis."}
    assert citation_valid({"document": "d1", "quote": "grade 2 colitis"}, texts)
    assert not citation_valid({"document": "d1", "quote": "pneumonitis"}, texts)
    assert not citation_valid({"document": "d2", "quote": "grade 2"}, texts)


def test_the_report_of_a_corpus_with_the_canary_never_names_him(tmp_path):
    src = Path(__file__).resolve().parents[2] / "synthetic_data"
    (tmp_path / "bundles").mkdir()
    (tmp_path / "gold").mkdir()
    shutil.copy(src / "bundles" / "pat-canary.json", tmp_path / "bundles")
    (tmp_path / "gold" / "irae.json").write_text(json.dumps(
        [{"patient": "pat-canary", "irae_detected": False, "events": []}]))
    report = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["eval", "--task", "irae", "--data", str(tmp_path), "--report", str(report),
                                       "--json", "--gate-f1", "0", "--gate-precision", "0"])
    assert result.exit_code == 0, result.output
    html = report.read_text(encoding="utf-8")
    assert "<svg" in html and "Per patient" in html
    assert "Canarywhistle" not in html and "Zyxwend" not in html
    assert "Canarywhistle" not in result.stdout
