"""Alembic environment: online migrations only, under an advisory lock, with timeouts."""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool, text

from models.orm import Base
from services.partitions import is_partition

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

target_metadata = Base.metadata
# Any constant works; it only has to be the same for every replica running `db upgrade` at once.
MIGRATION_LOCK_ID = 7_351_204_117
# Tables partitioned by day (postgresql_partition_by in models/orm.py). Their daily and default partitions
# are created and dropped at run time by services/partitions.py, so they are not schema drift.
PARTITIONED = {
    table.name for table in target_metadata.tables.values() if table.dialect_options["postgresql"]["partition_by"]
}


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    return not (type_ == "table" and name is not None and is_partition(name, PARTITIONED))


def _url() -> object:
    url = config.attributes.get("url") or os.environ.get("RISK_MONITOR_DATABASE_URL")
    if not url:
        raise SystemExit("no database URL: set RISK_MONITOR_DATABASE_URL or use `risk-monitor db upgrade`")
    if isinstance(url, str) and url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)  # type: ignore[call-overload]
    with engine.connect() as connection:
        # A migration that waits on a lock held by a busy table should fail, not freeze the service.
        connection.execute(text("SET lock_timeout = '10s'"))
        connection.execute(text("SET statement_timeout = '10min'"))
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        # The SETs above autobegan a transaction; commit it or SQLAlchemy 2 rolls the upgrade back.
        connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                compare_type=True,
                include_name=include_name,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
