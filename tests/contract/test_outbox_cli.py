"""``python -m app outbox`` lists without payloads; ``outbox retry`` sends what is due (fake server)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from app.cli import main
from app.writeback.submit import outbox_payload
from tests.contract import test_submit as base
from tests.contract.test_submit import BASE, CTX, Fault, spec

fake = base.fake  # fixture shared with test_submit.py


@pytest.fixture
def services(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("APP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APP_SERVER_PROFILE", "epic")
    monkeypatch.delenv("APP_DATABASE_URL", raising=False)
    monkeypatch.delenv("APP_PRIVATE_KEY_PATH", raising=False)
    from app.config import load_settings
    from app.services import Services

    return Services(load_settings())


def test_list_then_retry_then_nothing_due(services, fake) -> None:  # type: ignore[no-untyped-def]
    services.outbox.put("run-1", BASE, outbox_payload(spec("run-1"), CTX))
    runner = CliRunner()
    listed = runner.invoke(main, ["outbox"])
    assert listed.exit_code == 0
    [item] = json.loads(listed.stdout)
    assert item["run_id"] == "run-1" and item["state"] == "pending"
    assert "Canarywhistle" not in listed.output and "payload" not in listed.output
    fake.faults.append(Fault("POST", "DocumentReference", 503, times=4))  # the client retries 3 times itself
    failed = runner.invoke(main, ["outbox", "retry", "--auth", "none"])
    assert failed.exit_code == 1 and json.loads(failed.stdout)[0]["state"] == "pending"
    assert fake.faults[0].times == 0
    assert fake.drafts("run-1") == []
    # backing off: a plain retry sends nothing; --force sends it now
    assert json.loads(runner.invoke(main, ["outbox", "retry", "--auth", "none"]).stdout) == []
    forced = runner.invoke(main, ["outbox", "retry", "--auth", "none", "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)[0]["state"] == "sent" and len(fake.drafts("run-1")) == 1
    assert json.loads(runner.invoke(main, ["outbox"]).stdout)[0]["state"] == "sent"
