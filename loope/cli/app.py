"""The `loope` command. Local research commands never import the service's dependencies."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="loope",
    help="Positional-embedding experiments for Vision Transformers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
