"""Possibly delivered messages: when a message was sent but the server's confirmation was lost.

The ledger's new final status `possibly_delivered` needs no schema change (status is a string);
this column remembers the first such loss, so the row is resent once at most.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("possibly_delivered_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    # Rows in the new status go back to one the old code knows: they were sent, as far as anyone knows.
    op.execute("UPDATE deliveries SET status = 'sent' WHERE status = 'possibly_delivered'")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("possibly_delivered_at")
