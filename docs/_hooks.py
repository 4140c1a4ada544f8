"""mkdocs hooks: the CLI reference is generated from the typer app, so it cannot drift."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    import typer
    import typer.cli

    from redkit.cli.app import app

    command = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="redkit")
    text = typer.cli.get_docs_for_click(obj=command, ctx=ctx, name="redkit", title="")
    return markdown.replace(MARKER, text)
