"""Alembic environment: digest always passes its own connection (see store.migrate)."""

from alembic import context

from digest.store.migrate import include_object
from digest.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  include_object=include_object)
with context.begin_transaction():
    context.run_migrations()
