"""Items offered late and settling before they are sent (issue 15 items 1-2).

Revision ID: 0005
Revises: 0004

- items.content_changed_at: when an item's content last changed. Rows already there get their
  first_seen (settled long ago, as far as anyone knows).
- items.offered_in: the sent issue that offered the item, or passed over it. Rows already there
  published before the end of the latest sent (or sending) issue get the first such issue whose
  window ends after their publication: nothing stored before this migration is ever offered late,
  so nothing is sent twice. Later rows stay NULL until an issue offers them.
- issues.build_report: what each build offered, held back and passed over (JSON). Issues built
  before this migration have none; when such an issue starts sending, everything published before
  its window end is marked offered by it, as its window cut it.
"""

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("content_changed_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("offered_in", sa.Integer(), nullable=True))
    op.execute("UPDATE items SET content_changed_at = first_seen")
    op.execute(
        "UPDATE items SET offered_in = (SELECT MIN(i.number) FROM issues i"
        " WHERE i.status IN ('sending', 'sent') AND i.window_end > items.sort_at)"
        " WHERE sort_at < (SELECT MAX(s.window_end) FROM issues s WHERE s.status IN ('sending', 'sent'))"
    )
    with op.batch_alter_table("items") as batch:
        batch.alter_column("content_changed_at", existing_type=UTCDateTime(), nullable=False)
    with op.batch_alter_table("issues") as batch:
        batch.add_column(sa.Column("build_report", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Never a copy of the table on SQLite: deliveries rows reference issues (DROP COLUMN needs SQLite 3.35).
    with op.batch_alter_table("issues", recreate="never") as batch:
        batch.drop_column("build_report")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("offered_in")
        batch.drop_column("content_changed_at")
