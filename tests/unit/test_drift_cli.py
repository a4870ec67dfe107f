"""`python -m app drift snapshot | check` on two corpora nobody tuned on: a change of source alerts."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from app.cli import main

ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC, SYNTHEA = ROOT / "synthetic_data", ROOT / "eval_corpora" / "synthea"


def _run(args, env):
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_snapshot_then_check(tmp_path):
    env = {"APP_DATA_DIR": str(tmp_path), "APP_SECRET_KEY": "k" * 32}
    # no baseline yet: a clear error, exit 1
    res = _run(["drift", "check"], env)
    assert res.exit_code == 1 and "drift_no_baseline" in res.output
    res = _run(["drift", "snapshot", "--data", str(SYNTHETIC), "--period", "2026-W01", "--baseline", "--no-embed",
                "--since", "2025-11-01", "--until", "2026-06-01"], env)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["calibrated_metrics"]
    # the same source in later weeks: no alert
    for period, since, until in (("2026-W30", "2026-06-01", "2026-08-15"), ("2026-W40", "2026-08-15", "2026-11-01")):
        assert _run(["drift", "snapshot", "--data", str(SYNTHETIC), "--period", period, "--no-embed",
                     "--since", since, "--until", until], env).exit_code == 0
    res = _run(["drift", "check"], env)
    quiet = json.loads(res.output)
    assert res.exit_code == 0, quiet["alerts"]
    # then the notes come from another EHR's templates for two periods: alert
    for period in ("2026-W50", "2026-W51"):
        assert _run(["drift", "snapshot", "--data", str(SYNTHEA), "--period", period, "--no-embed"], env).exit_code == 0
    res = _run(["drift", "check"], env)
    out = json.loads(res.output)
    assert res.exit_code == 1
    assert {"token_kl", "section_tv"} <= {a["metric"] for a in out["alerts"]}
    stored = list((tmp_path / "drift").glob("*.snapshot"))
    assert len(stored) == 5 and all(b"allerg" not in p.read_bytes() for p in stored)  # sealed at rest


def test_bad_period_name(tmp_path):
    env = {"APP_DATA_DIR": str(tmp_path), "APP_SECRET_KEY": "k" * 32}
    res = _run(["drift", "snapshot", "--data", str(SYNTHETIC), "--period", "../x", "--no-embed"], env)
    assert res.exit_code == 1 and "drift_bad_period" in res.output
