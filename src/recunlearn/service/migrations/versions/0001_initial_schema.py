"""Initial schema: erasures, suppression (rows can be neither deleted nor changed), model versions and the
erasures each includes, API tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STAMP = sa.DateTime(timezone=True)   # ledger.UTCDateTime stores through this type

SQLITE_GUARDS = [
    "CREATE TRIGGER suppression_never_deleted BEFORE DELETE ON suppression "
    "BEGIN SELECT RAISE(ABORT, 'suppression rows are never deleted'); END",
    "CREATE TRIGGER suppression_never_changed BEFORE UPDATE ON suppression "
    "BEGIN SELECT RAISE(ABORT, 'suppression rows are never changed'); END",
]
POSTGRESQL_GUARDS = [
    "CREATE FUNCTION suppression_is_permanent() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'suppression rows are never deleted or changed'; END $$",
    "CREATE TRIGGER suppression_permanent BEFORE UPDATE OR DELETE ON suppression "
    "FOR EACH ROW EXECUTE FUNCTION suppression_is_permanent()",
    "CREATE TRIGGER suppression_not_truncated BEFORE TRUNCATE ON suppression "
    "FOR EACH STATEMENT EXECUTE FUNCTION suppression_is_permanent()",
]


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("kdf", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", STAMP, nullable=False),
        sa.Column("revoked_at", STAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
    )
    op.create_table(
        "model_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("method", sa.String(100), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("published_at", STAMP, nullable=False),
        sa.CheckConstraint("kind IN ('initial', 'unlearn', 'finetune', 'retrain')",
                           name=op.f("ck_model_versions_kind_known")),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_model_versions")),
    )
    op.create_table(
        "erasures",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subject_kind", sa.String(8), nullable=False),
        sa.Column("subject_ids", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("subject_request_id", sa.Uuid(), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("suppress_only", sa.Boolean(), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("received_at", STAMP, nullable=False),
        sa.Column("expected_completion", STAMP, nullable=True),
        sa.Column("started_at", STAMP, nullable=True),
        sa.Column("completed_at", STAMP, nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("erased_edges_count", sa.Integer(), nullable=True),
        sa.Column("erased_edges_sha256", sa.String(64), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("subject_kind IN ('user', 'item', 'pairs')", name=op.f("ck_erasures_subject_kind_known")),
        sa.CheckConstraint("status IN ('pending', 'in_progress', 'completed', 'failed', 'cancelled')",
                           name=op.f("ck_erasures_status_known")),
        sa.CheckConstraint("action IN ('erase', 'suppress')", name=op.f("ck_erasures_action_known")),
        sa.ForeignKeyConstraint(["model_version"], ["model_versions.version"],
                                name=op.f("fk_erasures_model_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_erasures_idempotency_key")),
        sa.UniqueConstraint("subject_request_id", name=op.f("uq_erasures_subject_request_id")),
    )
    op.create_index(op.f("ix_erasures_status_received_at"), "erasures", ["status", "received_at"])
    op.create_table(
        "model_version_erasures",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("erasure_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(["erasure_id"], ["erasures.id"], name=op.f("fk_model_version_erasures_erasure_id")),
        sa.ForeignKeyConstraint(["version"], ["model_versions.version"],
                                name=op.f("fk_model_version_erasures_version")),
        sa.PrimaryKeyConstraint("version", "erasure_id", name=op.f("pk_model_version_erasures")),
    )
    op.create_index(op.f("ix_model_version_erasures_erasure_id"), "model_version_erasures", ["erasure_id"])
    op.create_table(
        "suppression",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("item_id", sa.String(256), nullable=True),
        sa.Column("erasure_id", sa.Uuid(), nullable=False),
        sa.Column("added_at", STAMP, nullable=False),
        sa.CheckConstraint("kind IN ('user', 'item', 'pair')", name=op.f("ck_suppression_kind_known")),
        sa.ForeignKeyConstraint(["erasure_id"], ["erasures.id"], name=op.f("fk_suppression_erasure_id")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppression")),
    )
    op.create_index(op.f("ix_suppression_erasure_id"), "suppression", ["erasure_id"])
    op.create_index(op.f("ix_suppression_kind_user_id"), "suppression", ["kind", "user_id"])
    op.create_index(op.f("ix_suppression_kind_item_id"), "suppression", ["kind", "item_id"])
    guards = {"sqlite": SQLITE_GUARDS, "postgresql": POSTGRESQL_GUARDS}.get(op.get_bind().dialect.name, [])
    for statement in guards:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS suppression_not_truncated ON suppression")
    for table in ("suppression", "model_version_erasures", "erasures", "model_versions", "api_tokens"):
        op.drop_table(table)   # indexes and the other triggers go with their tables
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS suppression_is_permanent()")
