"""mkdocs hooks: pages that share text with the README include it, and the CLI reference is
generated from the typer app, so neither can drift from what they describe.

``<!-- readme: ## FastAPI -->`` on a line of its own stands for that section of README.md: its
text up to the next heading of the same or a higher level, without the heading itself, with
its sub-headings raised so the section's own level becomes the page's title level. Links into
the repository that are not part of the site become plain text; ``docs/...`` links are made
relative to the page.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

CLI_MARKER = "<!-- cli-reference -->"
_README_MARKER = re.compile(r"^<!-- readme: (#+) (.+?) -->$", re.MULTILINE)
_HEADING = re.compile(r"^(#+) ", re.MULTILINE)
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
_README = Path(__file__).resolve().parent.parent / "README.md"


class ReadmeSectionMissing(Exception):
    """A page names a README section that is not there (renamed or removed)."""


def _section(readme: str, level: str, title: str) -> str:
    lines = readme.splitlines()
    start = None
    fence = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fence = not fence
        if fence:
            continue
        match = _HEADING.match(line)
        if start is None:
            if line == f"{level} {title}":
                start = i + 1
        elif match and len(match.group(1)) <= len(level):
            return "\n".join(lines[start:i])
    if start is None:
        raise ReadmeSectionMissing(f"README.md has no section '{level} {title}'")
    return "\n".join(lines[start:])


def _relevel(text: str, level: str) -> str:
    shift = len(level) - 1
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        match = None if fence else _HEADING.match(line)
        if match:
            line = "#" * max(2, len(match.group(1)) - shift) + line[len(match.group(1)) :]
        out.append(line)
    return "\n".join(out)


def _links(text: str, page_uri: str) -> str:
    def fix(match: re.Match[str]) -> str:
        bang, label, target = match.groups()
        if re.match(r"[a-z]+:", target):
            return match.group(0)
        if target.startswith("docs/"):
            here = posixpath.dirname(page_uri)
            return f"{bang}[{label}]({posixpath.relpath(target[5:], here or '.')})"
        return label  # a README anchor or a repository file: not a page of the site

    return _LINK.sub(fix, text)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if "<!-- readme: " in markdown:
        readme = _README.read_text(encoding="utf-8")

        def include(match: re.Match[str]) -> str:
            level, title = match.groups()
            body = _relevel(_section(readme, level, title), level)
            return _links(body, page.file.src_uri)

        markdown = _README_MARKER.sub(include, markdown)
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, _cli_reference())
    return markdown


def _cli_reference() -> str:
    import typer
    import typer.cli

    from redkit.cli.app import app

    command = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="redkit")
    return typer.cli.get_docs_for_click(obj=command, ctx=ctx, name="redkit", title="")
