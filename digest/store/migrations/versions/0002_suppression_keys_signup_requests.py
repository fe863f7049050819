"""Suppression key ids and server-side sign-up requests.

Revision ID: 0002
Revises: 0001

- suppressions.key_id: the fingerprint of the key each erasure hash was made with. Rows already
  there get "" (hashed with the key then derived from the signing secret); digest adopts them on
  first use (digest.store.suppressions.usable_suppression_keys), so no erasure is lost.
- signup_requests: the choices and IP of a web sign-up, which confirmation links used to carry.
  Links sent before this migration carry no nonce and stop working: the person signs up again.
"""

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("suppressions") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=32), nullable=False, server_default=""))
    op.create_table('signup_requests',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('language', sa.String(length=10), nullable=False),
    sa.Column('series', sa.JSON(), nullable=False),
    sa.Column('want_events', sa.Boolean(), nullable=False),
    sa.Column('want_media', sa.Boolean(), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('nonce')
    )
    op.create_index('ix_signup_requests_subscriber', 'signup_requests', ['subscriber_id', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_signup_requests_subscriber', table_name='signup_requests')
    op.drop_table('signup_requests')
    with op.batch_alter_table("suppressions") as batch:
        batch.drop_column("key_id")
