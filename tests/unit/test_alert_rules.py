"""The Prometheus alert rules parse and only use metrics the app exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from app.monitoring.metrics import Metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_GAUGES = {"sda_outbox_depth", "sda_override_rate"}  # read from the database at scrape time


def _exported() -> set[str]:
    m = Metrics()
    names = set(SCRAPE_GAUGES)
    for metric in m.registry.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names |= {metric.name + s for s in ("_total", "_bucket", "_sum", "_count")}
    return names


def test_rules_parse_and_reference_exported_metrics():
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"DraftRunFailureRateHigh", "DraftRunP99Slow", "DraftCostPerRunOverBudget",
                                           "AgentLoopDetections", "EscalationRateAboveBaseline", "DriftAlertRaised"}
    exported = _exported()
    for rule in rules:
        used = set(re.findall(r"\bsda_[a-z_]+", rule["expr"]))
        assert used and used <= exported, (rule["alert"], used - exported)
        assert rule["annotations"]["runbook"].startswith("docs/governance.md#")
