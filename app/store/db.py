"""Database engine and declarative base shared by every store of the app.

SQLite by default (``sqlite:///<data dir>/app.db``); any SQLAlchemy URL works,
so ``APP_DATABASE_URL=postgresql+psycopg://...`` scales it out. Tables are
created on start-up with ``create_all`` (no migrations yet: the schema is young).
"""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, sessionmaker


class Base(DeclarativeBase):
    """Declarative base; every model of the app derives from it."""


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
    return create_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker:
    return sessionmaker(bind=engine, expire_on_commit=False)


def create_tables(engine: Engine) -> None:
    """Import every model module, then create missing tables."""
    import app.audit.trail  # noqa: F401
    import app.review.workflow  # noqa: F401
    import app.store.models  # noqa: F401
    import app.writeback.outbox  # noqa: F401

    Base.metadata.create_all(engine)
