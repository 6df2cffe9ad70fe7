"""The migrations build the schema the models describe, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.db import Base, make_engine
from service.migrations import alembic_config, upgrade


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    """Fails when a model changed without a revision: add one in service/migrations."""
    engine = make_engine(database_url)
    upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        drift = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert drift == [], f"models and migrations differ; add a revision for: {drift}"


def test_upgrade_is_repeatable_and_downgrade_empties_the_database(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()
