"""Governance: shadow runs (APP_SHADOW_BACKEND) and model-release gold runs (eval --record).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("primary_latency_ms", sa.Integer(), nullable=False),
        sa.Column("primary_cost_usd", sa.Float(), nullable=False),
        sa.Column("disagree", sa.Boolean(), nullable=False),
        sa.Column("agreement", sa.Float(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
    )
    op.create_index("ix_shadow_runs_run_id", "shadow_runs", ["run_id"])
    op.create_index("ix_shadow_runs_created", "shadow_runs", ["created"])
    op.create_table(
        "model_releases",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("f1", sa.Float(), nullable=True),
        sa.Column("precision", sa.Float(), nullable=True),
        sa.Column("corpus", sa.String(200), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
    )
    op.create_index("ix_model_releases_backend", "model_releases", ["backend"])
    op.create_index("ix_model_releases_model", "model_releases", ["model"])


def downgrade() -> None:
    op.drop_table("model_releases")
    op.drop_table("shadow_runs")
