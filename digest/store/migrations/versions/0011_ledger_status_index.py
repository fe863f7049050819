"""The ledger's status index ends in subscriber_id, so a row's `sent` mark finds it in one lookup.

Marking a row asks for (issue, subscriber, status 'sending'). With the index on (issue, status)
alone, PostgreSQL planned that mark as a scan of every `sending` entry of the issue (dead ones
included) whenever its statistics were fresh from the ledger fill: about 0.15 ms more server CPU
per message with three senders on a 20,000-row issue, more the more rows the senders hold claimed
at once (their `sending` entries, and the dead ones their snapshots keep). With subscriber_id
last, every plan the planner can choose is a single-row lookup; claims still walk
(issue, 'queued') in id order.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_status", table_name="deliveries")
    op.create_index("ix_deliveries_status", "deliveries", ["issue_number", "status", "subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_status", table_name="deliveries")
    op.create_index("ix_deliveries_status", "deliveries", ["issue_number", "status"])
