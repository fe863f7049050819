"""Editions readers deserve and settings staff manage: items keep their raw text beside the cleaned one
and an image,
issues hold texts per language, clicks are counted (counts only), and series, schedule, branding and
the logo can live in the store.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("raw", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("image", sa.Text(), nullable=True))
    with op.batch_alter_table("issues") as batch:
        batch.add_column(sa.Column("texts", sa.JSON(), nullable=True))
    op.create_table(
        "click_counts",
        sa.Column("issue_number", sa.Integer(), primary_key=True),
        sa.Column("link", sa.String(64), primary_key=True),
        sa.Column("language", sa.String(10), primary_key=True),
        sa.Column("section", sa.String(200), nullable=False),
        sa.Column("item_key", sa.String(2000), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
    )
    op.create_table(
        "series_sources",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("names", sa.JSON(), nullable=False),
        sa.Column("aliases", sa.JSON(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
    )
    op.create_table(
        "managed_settings",
        sa.Column("section", sa.String(40), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
    )
    op.create_table(
        "branding_files",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("branding_files")
    op.drop_table("managed_settings")
    op.drop_table("series_sources")
    op.drop_table("click_counts")
    # Never a copy of the table on SQLite: other rows reference issues (DROP COLUMN needs SQLite 3.35).
    with op.batch_alter_table("issues", recreate="never") as batch:
        batch.drop_column("texts")
    with op.batch_alter_table("items", recreate="never") as batch:
        batch.drop_column("image")
        batch.drop_column("raw")
