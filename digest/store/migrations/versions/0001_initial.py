"""Initial schema: feeds, items, issues, subscribers, suppressions, events, deliveries, locks, run log.

Revision ID: 0001
Revises:

Frozen from digest.store.schema with Alembic's autogenerate; tests/test_store.py checks that a
migrated database matches schema.py on SQLite and PostgreSQL. Every later change gets its own
migration (and store.migrate.HEAD_REVISION moves to it).
"""

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('feeds',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('etag', sa.Text(), nullable=True),
    sa.Column('last_modified', sa.Text(), nullable=True),
    sa.Column('retry_after', UTCDateTime(), nullable=True),
    sa.Column('last_fetch_at', UTCDateTime(), nullable=True),
    sa.Column('last_success_at', UTCDateTime(), nullable=True),
    sa.Column('last_status', sa.String(length=20), nullable=True),
    sa.Column('last_message', sa.Text(), nullable=False),
    sa.Column('last_error_at', UTCDateTime(), nullable=True),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('issues',
    sa.Column('number', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('window_start', UTCDateTime(), nullable=False),
    sa.Column('window_end', UTCDateTime(), nullable=False),
    sa.Column('intro', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('dropped', sa.JSON(), nullable=False),
    sa.Column('pinned', sa.JSON(), nullable=False),
    sa.Column('manifest', sa.JSON(), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.Column('approved_at', UTCDateTime(), nullable=True),
    sa.Column('approved_by', sa.String(length=200), nullable=True),
    sa.Column('approved_version', sa.String(length=64), nullable=True),
    sa.Column('send_at', UTCDateTime(), nullable=True),
    sa.Column('sending_started_at', UTCDateTime(), nullable=True),
    sa.Column('sent_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('number'),
    sa.UniqueConstraint('window_start', 'window_end', name='uq_issues_window')
    )
    op.create_table('items',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=2000), nullable=False),
    sa.Column('feed', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('published', UTCDateTime(), nullable=True),
    sa.Column('updated', UTCDateTime(), nullable=True),
    sa.Column('sort_at', UTCDateTime(), nullable=False),
    sa.Column('first_seen', UTCDateTime(), nullable=False),
    sa.Column('last_seen', UTCDateTime(), nullable=False),
    sa.Column('authors', sa.JSON(), nullable=False),
    sa.Column('categories', sa.JSON(), nullable=False),
    sa.Column('series', sa.JSON(), nullable=False),
    sa.Column('language', sa.String(length=10), nullable=True),
    sa.Column('summary_html', sa.Text(), nullable=False),
    sa.Column('content_html', sa.Text(), nullable=False),
    sa.Column('event', sa.JSON(), nullable=True),
    sa.Column('event_start', UTCDateTime(), nullable=True),
    sa.Column('media', sa.JSON(), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_index('ix_items_event_start', 'items', ['event_start'], unique=False)
    op.create_index('ix_items_sort_at', 'items', ['sort_at'], unique=False)
    op.create_table('locks',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('run_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.Column('job', sa.String(length=40), nullable=False),
    sa.Column('outcome', sa.String(length=40), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('scheduled_for', UTCDateTime(), nullable=True),
    sa.Column('issue_number', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_run_log_job', 'run_log', ['job', 'scheduled_for'], unique=False)
    op.create_table('subscribers',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('language', sa.String(length=10), nullable=False),
    sa.Column('series', sa.JSON(), nullable=False),
    sa.Column('want_events', sa.Boolean(), nullable=False),
    sa.Column('want_media', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('consent_at', UTCDateTime(), nullable=True),
    sa.Column('consent_method', sa.String(length=20), nullable=False),
    sa.Column('consent_ip', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.Column('confirmed_at', UTCDateTime(), nullable=True),
    sa.Column('unsubscribed_at', UTCDateTime(), nullable=True),
    sa.Column('bounce_count', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email'),
    sqlite_autoincrement=True
    )
    op.create_index('ix_subscribers_status', 'subscribers', ['status'], unique=False)
    op.create_table('suppressions',
    sa.Column('email_hash', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('email_hash')
    )
    op.create_table('deliveries',
    sa.Column('issue_number', sa.Integer(), nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=False),
    sa.Column('next_attempt_at', UTCDateTime(), nullable=True),
    sa.Column('claimed_by', sa.String(length=200), nullable=True),
    sa.Column('claimed_at', UTCDateTime(), nullable=True),
    sa.Column('sent_at', UTCDateTime(), nullable=True),
    sa.Column('message_id', sa.String(length=300), nullable=True),
    sa.ForeignKeyConstraint(['issue_number'], ['issues.number'], ),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('issue_number', 'subscriber_id')
    )
    op.create_index('ix_deliveries_status', 'deliveries', ['issue_number', 'status'], unique=False)
    op.create_table('subscriber_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=True),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.Column('issue_number', sa.Integer(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_subscriber_events_at', 'subscriber_events', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_subscriber_events_at', table_name='subscriber_events')
    op.drop_table('subscriber_events')
    op.drop_index('ix_deliveries_status', table_name='deliveries')
    op.drop_table('deliveries')
    op.drop_table('suppressions')
    op.drop_index('ix_subscribers_status', table_name='subscribers')
    op.drop_table('subscribers')
    op.drop_index('ix_run_log_job', table_name='run_log')
    op.drop_table('run_log')
    op.drop_table('locks')
    op.drop_index('ix_items_sort_at', table_name='items')
    op.drop_index('ix_items_event_start', table_name='items')
    op.drop_table('items')
    op.drop_table('issues')
    op.drop_table('feeds')
