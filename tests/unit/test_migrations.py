"""Alembic migrations on SQLite and on a real PostgreSQL: empty and populated baseline databases.

A populated database as create_all made it before migrations (no
alembic_version; on PostgreSQL outbox.state still VARCHAR(16) as before commit
7f5b9ab) is stamped with the baseline and upgraded; its rows survive, a held
draft's state fits, and the migrated schema equals the models.
"""

from __future__ import annotations

import json
import time

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect, text

from app.store import migrate
from app.store.db import Base, make_engine, make_sessionmaker
from app.store.models import OutboxItem, ReviewRecord, RunRecord, Vault
from app.writeback.outbox import HELD, Outbox


def _schema_diff(engine) -> list:  # type: ignore[no-untyped-def]
    import app.store.models  # noqa: F401

    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def test_an_empty_database_is_migrated_to_the_models(database_url):
    engine = make_engine(database_url)
    assert migrate.upgrade(engine) == migrate.head() == "0004"
    assert _schema_diff(engine) == []
    assert migrate.upgrade(engine) == "0004"  # a second run is a no-op


def _populate_baseline(engine) -> None:  # type: ignore[no-untyped-def]
    migrate.upgrade(engine, "0001")
    now = time.time()
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))  # as create_all left it: no migrations yet
        if engine.dialect.name == "postgresql":  # created before 7f5b9ab widened the column
            conn.execute(text("ALTER TABLE outbox ALTER COLUMN state TYPE VARCHAR(16)"))
        conn.execute(text("INSERT INTO launch_sessions VALUES ('s1', 'https://ehr/fhir', 'sealed', :n, :e)"),
                     {"n": now, "e": now + 3600})
        conn.execute(text("INSERT INTO drafts (run_id, session_id, patient_hash, task, status, payload_encrypted,"
                          " created, version) VALUES ('r1', 's1', 'h', 'summary', 'completed', 'x', :n, 1)"),
                     {"n": now})
        conn.execute(text("INSERT INTO outbox (run_id, fhir_base, state, payload_encrypted, attempts, created,"
                          " updated) VALUES ('r1', 'https://ehr/fhir', 'pending', 'x', 0, :n, :n)"), {"n": now})
        conn.execute(text("INSERT INTO reviews (document_id, run_id, reviewer, action, at) "
                          "VALUES ('d1', 'r1', 'Practitioner/p', 'approve', :n)"), {"n": now})
        conn.execute(text("INSERT INTO audit_entries (recorded, event_json, prev_hash, hash) "
                          "VALUES ('2026-12-01T00:00:00Z', '{}', :p, :h)"), {"p": "0" * 64, "h": "a" * 64})


def test_a_populated_baseline_database_is_upgraded_and_keeps_its_rows(database_url):
    engine = make_engine(database_url)
    _populate_baseline(engine)
    if engine.dialect.name == "postgresql":
        cols = {c["name"]: c for c in inspect(engine).get_columns("outbox")}
        assert cols["state"]["type"].length == 16  # the bug of the issue, reproduced
    assert migrate.current(engine) is None
    assert migrate.upgrade(engine) == "0004"
    assert _schema_diff(engine) == []
    maker = make_sessionmaker(engine)
    with maker() as db:
        assert db.get(OutboxItem, "r1").state == "pending"
        assert db.query(ReviewRecord).count() == 1
        assert db.query(RunRecord).count() == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_entries")).scalar() == 1
        assert conn.execute(text("SELECT result_encrypted FROM drafts WHERE run_id='r1'")).scalar() is None
    # a held draft's state (19 characters) now fits on PostgreSQL too
    Outbox(maker, Vault(b"k")).put("r2", "https://ehr/fhir", {"kind": "draft"}, state=HELD)
    with maker() as db:
        assert db.get(OutboxItem, "r2").state == HELD


def test_downgrade_to_the_baseline_and_up_again(database_url):
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    migrate.downgrade(engine, "0001")
    assert migrate.current(engine) == "0001" and not inspect(engine).has_table("runs")
    assert migrate.upgrade(engine) == "0004" and _schema_diff(engine) == []


def test_cli_db_upgrade(tmp_path, monkeypatch):
    from app.cli import main

    monkeypatch.setenv("APP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("APP_DATABASE_URL", raising=False)
    first = CliRunner().invoke(main, ["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output.strip().splitlines()[-1]) == {"from": None, "to": "0004"}
    again = CliRunner().invoke(main, ["db", "upgrade"])
    assert json.loads(again.output.strip().splitlines()[-1]) == {"from": "0004", "to": "0004"}
    assert (tmp_path / "data" / "app.db").exists()
    bad = CliRunner().invoke(main, ["db", "upgrade", "--url", "postgresql+psycopg://nobody@127.0.0.1:1/x"])
    assert bad.exit_code == 3 and "db_unavailable" in bad.output


def test_the_app_migrates_at_start_up(tmp_path):
    from app import create_app

    app = create_app({"testing": True, "data_dir": tmp_path})
    assert migrate.current(app.extensions["smart_draft"].engine) == migrate.head()
