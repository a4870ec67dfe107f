"""Alembic environment: runs on the connection that ``app.store.migrate`` passes in."""

from __future__ import annotations

from alembic import context

import app.store.models  # noqa: F401 - registers every table on Base.metadata
from app.store.db import Base, make_engine

target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # `alembic -x url=...` from a shell
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    with make_engine(str(url)).begin() as conn:
        _run(conn)
