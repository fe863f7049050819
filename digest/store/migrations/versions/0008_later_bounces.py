"""Bounces and complaints that arrive after the send (issue 15 item 12).

`bounce_reports` remembers each report event acted on (and each Mailgun webhook token used), so a
mailbox imported twice, or a webhook delivered twice, changes nothing the second time. The index on
`deliveries.message_id` finds the ledger row a report's original Message-ID names. The new
subscriber status `complained` and the history events need no schema change (strings).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bounce_reports",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("issue_number", sa.Integer(), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_bounce_reports_received_at", "bounce_reports", ["received_at"])
    op.create_index("ix_deliveries_message_id", "deliveries", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_message_id", table_name="deliveries")
    op.drop_index("ix_bounce_reports_received_at", table_name="bounce_reports")
    op.drop_table("bounce_reports")
