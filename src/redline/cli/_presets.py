"""``redline presets``: list the presets installed (the research methods), and show one."""

from __future__ import annotations

import inspect
import json
import warnings
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from redline.cli import cli
from redline.errors import ConfigError
from redline.plugins import PRESET_GROUP, PluginWarning, discover, load_preset


@cli.group("presets")
def presets_group() -> None:
    """The research methods as presets: built-in and installed plugins."""


@presets_group.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="A JSON array of {name, summary, paper, needs, package, version, target}.")
def list_command(as_json: bool) -> None:
    """Name, method, paper and needs of every preset (use with `redline refine --preset`).

    With --json, stdout is a JSON array with one object per preset, sorted by name
    (summary, paper and needs are null when the plugin fails to load; the warning goes
    to stderr).
    """
    plugins, clashes = discover(PRESET_GROUP)
    rows: list[dict[str, Any]] = []
    for name in sorted(plugins):
        plugin = plugins[name]
        row: dict[str, Any] = {"name": name, "summary": None, "paper": None, "needs": None}
        try:
            preset = load_preset(name)
            row |= {"summary": preset.summary, "paper": preset.paper, "needs": preset.needs}
        except ConfigError as exc:
            warnings.warn(str(exc), PluginWarning, stacklevel=1)
        rows.append({**row, "package": plugin.package, "version": plugin.version,
                     "target": plugin.target})
    for name, claimants in sorted(clashes.items()):
        who = " and ".join(f"{p.package} {p.version}" for p in claimants)
        click.echo(f"redline: warning: preset name {name!r} is registered by {who}; "
                   "it cannot be used until one is uninstalled", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("name", "method", "paper", "needs", "package"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["summary"] or "(failed to load: see the warning)",
                      row["paper"] or "", row["needs"] or "", row["package"])
    Console(width=max(120, Console().width)).print(table)


@presets_group.command("show")
@click.argument("name")
def show_command(name: str) -> None:
    """A preset's method, what it needs, and its Python function's documentation."""
    preset = load_preset(name)  # errors: the group's boundary (one line, exit 2)
    click.echo(f"{preset.name}: {preset.summary}\n  paper: {preset.paper}\n"
               f"  needs: {preset.needs}\n")
    click.echo(f"{preset.function.__module__}.{preset.function.__name__}"
               f"{inspect.signature(preset.function)}\n")
    click.echo(inspect.getdoc(preset.function) or "(no description)")
