"""Initial schema.

Revision ID: 0001
Revises:
"""

from alembic import op

from digest.store import schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# NOTE: while the first release is being built, 0001 creates the tables from schema.py;
# before release it is frozen into explicit op.create_table calls (autogenerate), and every
# later change gets its own migration.


def upgrade() -> None:
    schema.metadata.create_all(op.get_bind())


def downgrade() -> None:
    schema.metadata.drop_all(op.get_bind())
