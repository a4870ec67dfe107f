"""Refresh lease on launch sessions: one token refresh at a time per session across workers.

A refresh token is single use. Two gunicorn workers (or hosts) refreshing one session at the same
moment would send it twice and the EHR would answer the second ``invalid_grant``. The worker that
takes the lease (a conditional UPDATE, atomic on SQLite and PostgreSQL) refreshes; the others wait
for the new tokens. A lease left by a crashed worker expires by itself.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("launch_sessions") as batch:
        batch.add_column(sa.Column("refresh_lease", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("launch_sessions") as batch:
        batch.drop_column("refresh_lease")
