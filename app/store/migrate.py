"""Schema migrations with alembic, configured in code (no alembic.ini needed).

``upgrade(engine)`` brings any database to the newest revision; it is run by
``python -m app db upgrade``, by ``make run`` and at start-up of every process
(a no-op when the database is current). Several workers starting together are
serialised: PostgreSQL by an advisory lock, SQLite by a file lock beside the
database. A database made by ``create_all`` before migrations existed (tables
but no ``alembic_version``) is stamped with the baseline ``0001`` first, then
upgraded. Revisions live in ``app/store/migrations/versions``.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
_PG_LOCK_ID = 0x5DA_0001  # advisory lock id for migrations


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    return str(ScriptDirectory.from_config(config()).get_current_head())


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _serialised(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        lock_path = Path(str(engine.url.database) + ".migrate-lock")
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_ID})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_ID})
                conn.commit()
        return
    yield


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade to ``revision`` (newest by default); returns the revision the database is at."""
    target = head() if revision == "head" else revision
    if current(engine) == target:
        return target
    with _serialised(engine):
        with engine.begin() as conn:
            rev = MigrationContext.configure(conn).get_current_revision()
            if rev is None and inspect(conn).has_table("launch_sessions"):
                command.stamp(config(conn), BASELINE)  # made by create_all before migrations
            command.upgrade(config(conn), revision)
    return current(engine)


def downgrade(engine: Engine, revision: str) -> None:
    with _serialised(engine), engine.begin() as conn:
        command.downgrade(config(conn), revision)
