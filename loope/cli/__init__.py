"""Entry point of the `loope` command; each module below adds its own commands."""

from __future__ import annotations

import logging

from loope.cli import admin, client, demo, doctor, local, pe_tools  # noqa: F401  (registers commands)
from loope.cli.app import app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic announces each of its plugins at start; its upgrade steps stay visible.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    app()
