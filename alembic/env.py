"""Alembic environment: the URL comes from the fleet settings (DATABASE_URL) unless the
caller set one on the Alembic config (tests and `llmfleet migrate --url`)."""

from __future__ import annotations

from alembic import context

from models.db import make_engine
from models.settings import CommonSettings
from models.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or CommonSettings().database_url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url, pool_size=1)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
