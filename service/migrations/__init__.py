"""Schema migrations of the results database (Alembic), for SQLite and PostgreSQL alike.

Every change to the tables in `service.db` needs a revision here; a test compares the
models with the migrated schema so a forgotten revision fails the suite.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
# Any constant will do: it serialises concurrent upgrades of one PostgreSQL database.
_PG_LOCK_KEY = 0x100BE


def alembic_config() -> Config:
    """The Alembic configuration, with scripts in this package and no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database behind `engine` to `revision`, in one transaction."""
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    log.info("database schema at %s", revision)
