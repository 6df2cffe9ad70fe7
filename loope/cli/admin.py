"""Administration of a loope database: `loope user add NAME [--admin]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loope.cli.app import app

user_app = typer.Typer(help="Team members and their tokens.", no_args_is_help=True)
app.add_typer(user_app, name="user")


@user_app.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="The user's name, unique in the database.")],
    admin: Annotated[bool, typer.Option(help="May cancel or retry anyone's runs.")] = False,
    data_dir: Annotated[
        Path, typer.Option(envvar="LOOPE_DATA_DIR", help="Holds the SQLite database.")
    ] = Path("loope-data"),
    database_url: Annotated[
        str, typer.Option(envvar="LOOPE_DATABASE_URL", help="A PostgreSQL or SQLite URL.")
    ] = "",
) -> None:
    """Add a user and print its bearer token, which is shown only this once.

    Examples:

      loope user add ada --admin

      LOOPE_DATABASE_URL=postgresql+psycopg://db/loope loope user add bob
    """
    from service.auth import Accounts, NameTakenError
    from service.db import make_engine, make_sessionmaker
    from service.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    where = engine.url.render_as_string(hide_password=True)  # for the message; no password
    try:
        user, token = Accounts(make_sessionmaker(engine)).add_user(
            name, "admin" if admin else "user"
        )
    except (NameTakenError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    finally:
        engine.dispose()
    typer.echo(f"added {user.role} {user.name!r} to {where}; token (shown once, keep it safe):")
    typer.echo(token)
