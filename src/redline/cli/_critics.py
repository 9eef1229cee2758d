"""``redline critics``: list the critics installed, and show one."""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from redline.cli import EXIT_USAGE, cli
from redline.errors import ConfigError
from redline.plugins import PluginWarning, discover


@cli.group("critics")
def critics_group() -> None:
    """The critics redline can use: built-in and installed plugins."""


@critics_group.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON array of {name, description, package, version, target}.")
def list_command(as_json: bool) -> None:
    """Name, description, package and version of every critic.

    With --json, stdout is a JSON array with one object per critic, sorted by name:
    name, description (null when the plugin fails to load), package, version and target
    (the factory, module:attribute). Warnings (a plugin that fails to load, a name two
    packages claim) still go to stderr.
    """
    plugins, clashes = discover()
    rows: list[dict[str, Any]] = []
    for name in sorted(plugins):
        plugin = plugins[name]
        try:
            description: str | None = plugin.description()
        except ConfigError as exc:
            warnings.warn(str(exc), PluginWarning, stacklevel=1)
            description = None
        rows.append({"name": name, "description": description, "package": plugin.package,
                     "version": plugin.version, "target": plugin.target})
    for name, claimants in sorted(clashes.items()):
        who = " and ".join(f"{p.package} {p.version}" for p in claimants)
        click.echo(f"redline: warning: critic name {name!r} is registered by {who}; "
                   "it cannot be used until one is uninstalled", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("name", "description", "package", "version"):
        table.add_column(column)
    for row in rows:
        failed = row["description"] is None
        table.add_row(row["name"], "(failed to load: see the warning)" if failed
                      else row["description"], row["package"], row["version"])
    Console(width=max(100, Console().width)).print(table)


@critics_group.command("show")
@click.argument("name")
def show_command(name: str) -> None:
    """A critic's argument and examples."""
    plugins, clashes = discover()
    if name in clashes:
        who = " and ".join(p.package for p in clashes[name])
        click.echo(f"redline: error: critic name {name!r} is registered by {who}", err=True)
        sys.exit(EXIT_USAGE)
    if name not in plugins:
        click.echo(f"redline: error: unknown critic {name!r} (known: "
                   f"{', '.join(sorted(plugins))})", err=True)
        sys.exit(EXIT_USAGE)
    plugin = plugins[name]
    try:
        text = plugin.help()
    except ConfigError as exc:
        click.echo(f"redline: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"{name}  ({plugin.package} {plugin.version}, {plugin.target})\n")
    click.echo(text)
