"""gunicorn settings of the app: several gthread workers sharing only the database.

    gunicorn -c deploy/gunicorn.conf.py app.wsgi:application

Every worker serves any request of any session: launch context, pending
launches, drafts, reviews, jobs and the discovery cache are in the database
(APP_DATABASE_URL; PostgreSQL for several workers or hosts, SQLite for one
host). A worker keeps only rebuildable caches (a session's chart and index,
rebuilt from the FHIR server and the encrypted embedding cache). The master
migrates the database once before forking (``on_starting``); workers that
start later find it current. Settings here can be overridden from the
environment: GUNICORN_BIND, GUNICORN_WORKERS, GUNICORN_THREADS, GUNICORN_TIMEOUT.
docs/operations.md explains the setup.
"""

from __future__ import annotations

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "300"))  # a drafting request may take minutes
graceful_timeout = 30
keepalive = 5
preload_app = False  # each worker builds its own collaborators (torch/ONNX are not fork-safe)
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
accesslog = "-"
# no query strings in the access log: /callback?code=... must never reach a log
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
# prometheus-client multiprocess mode: every worker writes its counters under this directory and
# /metrics aggregates them (docs/governance.md). Set before any worker imports prometheus_client.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR",
                      os.path.join(os.environ.get("APP_DATA_DIR", "var"), "prometheus-multiproc"))


def on_starting(server):  # type: ignore[no-untyped-def]
    """Migrate once in the master, before any worker starts."""
    import shutil

    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)  # stale files of a previous run
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], mode=0o700, exist_ok=True)
    from app.config import load_settings
    from app.store.db import make_engine
    from app.store.migrate import upgrade

    engine = make_engine(load_settings().effective_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """A dead worker's live gauges leave the aggregate; its counters stay (prometheus-client)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
