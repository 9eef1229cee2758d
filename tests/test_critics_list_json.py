"""``redline critics list --json``: a machine-readable list; warnings stay on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from redline.cli import cli

FIELDS = ["name", "description", "package", "version", "target"]

PLUGIN = '''
from redline import critic

def make(arg):
    """Says whether the text is short.

    Argument: none.
    """
    @critic(name="short")
    def short(text: str) -> bool:
        return len(text) < 80
    return short
'''


def install(site: Path, package: str, module: str, source: str, name: str) -> None:
    """A module and its distribution metadata, where importlib.metadata finds them."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{package.replace('-', '_')}-2.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 2.0.1\n")
    (info / "entry_points.txt").write_text(f"[redline.critics]\n{name} = {module}:make\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    for name in ("json_short", "json_broken", "json_one", "json_two"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return root


def test_builtins_and_plugins_as_a_json_array(site: Path) -> None:
    install(site, "json-short", "json_short", PLUGIN, "short")
    out = CliRunner().invoke(cli, ["critics", "list", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert all(list(row) == FIELDS for row in rows)
    names = [row["name"] for row in rows]
    assert names == sorted(names) and {"judge", "cmd", "short"} <= set(names)
    by_name = {row["name"]: row for row in rows}
    assert by_name["short"] == {"name": "short", "description": "Says whether the text is short.",
                                "package": "json-short", "version": "2.0.1",
                                "target": "json_short:make"}
    judge = by_name["judge"]
    assert (judge["package"], judge["version"], judge["target"]) == (
        "redline", version("redline"), "redline.critics.judge:judge_critic")
    assert judge["description"]


def test_a_broken_plugin_is_null_in_the_json_and_warned_about_on_stderr(site: Path) -> None:
    install(site, "json-broken", "json_broken", "raise RuntimeError('bad build')\n", "broken")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", "from redline.cli import main; main()", "critics", "list",
         "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["broken"]["description"] is None
    assert rows["broken"]["package"] == "json-broken" and rows["judge"]["description"]
    assert "json-broken 2.0.1 failed to load" in done.stderr and "bad build" in done.stderr


def test_a_name_two_packages_claim_is_left_out_and_named_on_stderr(site: Path) -> None:
    install(site, "json-one", "json_one", PLUGIN, "dup")
    install(site, "json-two", "json_two", PLUGIN, "dup")
    out = CliRunner().invoke(cli, ["critics", "list", "--json"])
    assert out.exit_code == 0
    assert "dup" not in {row["name"] for row in json.loads(out.stdout)}
    assert "'dup' is registered by" in out.stderr
    assert "json-one" in out.stderr and "json-two" in out.stderr
