"""Durable state for a stateless web tier.

- outbox.state VARCHAR(32): databases created before commit 7f5b9ab have
  VARCHAR(16), which PostgreSQL enforces ('held_until_approval' is 19).
- drafts: result_encrypted, reviews_encrypted, updated.
- new tables: runs (the run ledger), web_sessions, pending_launches,
  smart_configurations, jobs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("state", existing_type=sa.String(16), type_=sa.String(32),
                           existing_nullable=False)
    with op.batch_alter_table("drafts") as batch:
        batch.add_column(sa.Column("result_encrypted", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reviews_encrypted", sa.Text(), nullable=True))
        batch.add_column(sa.Column("updated", sa.Float(), nullable=True))
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("limits_hit", sa.String(32), nullable=True),
        sa.Column("unsupported", sa.Integer(), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=True),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.Column("created", sa.Float(), nullable=False),
    )
    op.create_index("ix_runs_session_id", "runs", ["session_id"])
    op.create_index("ix_runs_task", "runs", ["task"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index("ix_runs_created", "runs", ["created"])
    op.create_table(
        "web_sessions",
        sa.Column("sid", sa.String(64), primary_key=True),
        sa.Column("context_encrypted", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
    )
    op.create_index("ix_web_sessions_expires", "web_sessions", ["expires"])
    op.create_table(
        "pending_launches",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(128), nullable=False),
        sa.Column("iss", sa.String(500), nullable=False),
        sa.Column("secrets_encrypted", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
    )
    op.create_index("ix_pending_launches_expires", "pending_launches", ["expires"])
    op.create_table(
        "smart_configurations",
        sa.Column("fhir_base", sa.String(500), primary_key=True),
        sa.Column("document_json", sa.Text(), nullable=False),
        sa.Column("fetched", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("task", sa.String(32), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("heartbeat", sa.Float(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
    )
    op.create_index("ix_jobs_session_id", "jobs", ["session_id"])
    op.create_index("ix_jobs_state", "jobs", ["state"])


def downgrade() -> None:
    for table in ("jobs", "smart_configurations", "pending_launches", "web_sessions", "runs"):
        op.drop_table(table)
    with op.batch_alter_table("drafts") as batch:
        batch.drop_column("updated")
        batch.drop_column("reviews_encrypted")
        batch.drop_column("result_encrypted")
