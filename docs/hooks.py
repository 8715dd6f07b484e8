"""MkDocs hook: the command-line reference is the command line's own ``--help``, command by
command, so the page cannot disagree with the code (a command added is a section added)."""

from __future__ import annotations

MARKER = "<!-- ens --help, every command -->"


def _paths(group, path=()):
    for name, command in group.commands.items():
        yield (*path, name)
        if hasattr(command, "commands"):
            yield from _paths(command, (*path, name))


def on_page_markdown(markdown: str, **_: object) -> str:
    if MARKER not in markdown:
        return markdown
    from typer.main import get_command
    from typer.testing import CliRunner

    from ensembler.cli import app

    runner = CliRunner()
    sections = []
    for path in [(), *_paths(get_command(app))]:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"}, terminal_width=100)
        if result.exit_code != 0:
            raise RuntimeError(f"ens {' '.join(path)} --help exited {result.exit_code}: {result.output}")
        sections.append(f"## `{' '.join(('ens', *path))}`\n\n```text\n{result.output.rstrip()}\n```\n")
    return markdown.replace(MARKER, "\n".join(sections))
