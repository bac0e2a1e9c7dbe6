"""add collection shards and replicas

Account shards of the per-account collection jobs, claimed by replicas with FOR UPDATE SKIP LOCKED
(services/shards.py), and the replicas' presence rows that size each one's fair share. New tables only:
no lock on existing ones, so the migration is safe while older replicas keep running (they simply don't
shard).

Revision ID: 5a7d1c2e9b30
Revises: 95c1fdcf939e
Create Date: 2026-11-22 04:40:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5a7d1c2e9b30"
down_revision: str | None = "95c1fdcf939e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "collection_shards",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "shard", name=op.f("pk_collection_shards")),
    )
    op.create_table(
        "replicas",
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("holder", name=op.f("pk_replicas")),
    )


def downgrade() -> None:
    op.drop_table("replicas")
    op.drop_table("collection_shards")
