"""Database engine and declarative base shared by every store of the app.

SQLite by default (``sqlite:///<data dir>/app.db``); PostgreSQL
(``APP_DATABASE_URL=postgresql+psycopg://...``) when several workers or hosts
share the state. The schema is managed by alembic (``app.store.migrate``:
``python -m app db upgrade``, also run at start-up); ``create_tables`` is for
throw-away test databases only.
"""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, sessionmaker


class Base(DeclarativeBase):
    """Declarative base; every model of the app derives from it (all in ``app.store.models``)."""


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL and foreign keys so concurrent readers work."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, expire_on_commit=False)


def create_tables(engine: Engine) -> None:
    """Create missing tables from the models (tests' throw-away databases; the app migrates)."""
    import app.store.models  # noqa: F401 - registers every model; imports none of the store's users

    Base.metadata.create_all(engine)
