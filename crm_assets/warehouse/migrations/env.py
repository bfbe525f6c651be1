"""Alembic environment: runs on the connection crm_assets.warehouse.engine.migrate hands it."""

from alembic import context

from crm_assets.warehouse.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through crm_assets.warehouse.engine.migrate(engine)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
