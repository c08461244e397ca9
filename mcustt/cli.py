"""The ``mcustt`` command.

Its subcommands live where their code is and are loaded by name only when run (click's
lazy-group pattern, like the seams' string registries): the operator's commands
(:mod:`mcustt.admin_cli`) and the demo (:mod:`mcustt.demo`) need the server stack, the
client commands (:mod:`mcustt.client.cli`) must start without it.
"""

from __future__ import annotations

import sys

import click

from mcustt import __version__
from mcustt.importer import import_from_string

#: name → ``module:attribute`` of each subcommand.
COMMANDS: dict[str, str] = {
    "serve": "mcustt.admin_cli:serve",
    "migrate": "mcustt.admin_cli:migrate",
    "tenants": "mcustt.admin_cli:tenants",
    "stream": "mcustt.client.cli:stream",
    "tail": "mcustt.client.cli:tail",
    "sessions": "mcustt.client.cli:sessions",
    "transcript": "mcustt.client.cli:transcript",
    "summary": "mcustt.client.cli:summary",
    "demo": "mcustt.demo:demo",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used (or listed in ``--help``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        ref = COMMANDS.get(cmd_name)
        if ref is None:
            return None
        command = import_from_string(ref)
        assert isinstance(command, click.Command), ref
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mcustt")
def main() -> None:
    """mcustt: live captioning server for conferencing MCUs and browsers."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
