"""Baseline: the schema create_all made before migrations (git 8ac37a9).

launch_sessions, drafts, audit_entries, outbox, reviews. A database that has
these tables but no alembic_version is stamped with this revision.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "launch_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("fhir_base", sa.String(500), nullable=False),
        sa.Column("tokens_encrypted", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
    )
    op.create_table(
        "drafts",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("patient_hash", sa.String(64), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("payload_encrypted", sa.Text(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_drafts_patient_hash", "drafts", ["patient_hash"])
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("recorded", sa.String(40), nullable=False),
        sa.Column("event_json", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "outbox",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("fhir_base", sa.String(500), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("payload_encrypted", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error_code", sa.String(64), nullable=True),
        sa.Column("result_json", sa.Text(), nullable=True),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
    )
    op.create_index("ix_outbox_state", "outbox", ["state"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("edit_distance", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(32), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
    )
    op.create_index("ix_reviews_document_id", "reviews", ["document_id"])
    op.create_index("ix_reviews_run_id", "reviews", ["run_id"])


def downgrade() -> None:
    for table in ("reviews", "outbox", "audit_entries", "drafts", "launch_sessions"):
        op.drop_table(table)
