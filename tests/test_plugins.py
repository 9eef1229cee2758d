"""Critic plugins through the real entry-point mechanism (distributions on sys.path)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from redline.cli import cli
from redline.errors import ConfigError
from redline.plugins import build_critic, discover, parse_spec
from redline.testing import OpenAICompatServer


def install_fake(site: Path, package: str, module: str, source: str,
                 entries: dict[str, str]) -> None:
    """Write a module and its distribution metadata where importlib.metadata finds them."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{package.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.2.3\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[redline.critics]\n{lines}\n")


GOOD = '''
from redline import critic

def make(arg):
    """Says whether the text contains ARG.

    Argument: the text to look for (may contain colons and spaces).
    Examples:
        --critic contains:hello
    """
    @critic(name="contains")
    def contains(text: str) -> tuple[float, str]:
        found = (arg or "") in text
        return (1.0, "") if found else (0.0, f"Mention {arg!r}.")
    contains.arg = arg
    return contains

def not_a_critic(arg):
    return 42
'''


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    for name in ("fake_good", "fake_broken", "fake_one", "fake_two"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return root


def test_builtins_are_registered_through_the_same_group() -> None:
    plugins, clashes = discover()
    assert plugins["judge"].package == "redline"
    assert plugins["judge"].target == "redline.critics.judge:judge_critic"
    assert clashes == {}


def test_discovery_is_lazy_and_arguments_keep_colons_and_spaces(site: Path) -> None:
    install_fake(site, "fake-good", "fake_good", GOOD, {"contains": "fake_good:make"})
    plugins, _ = discover()
    assert plugins["contains"].package == "fake-good" and plugins["contains"].version == "1.2.3"
    assert "fake_good" not in sys.modules
    made = build_critic("contains:a:b c: d")
    assert made.arg == "a:b c: d"
    assert build_critic("contains").arg is None
    assert "fake_good" in sys.modules


@pytest.mark.parametrize(("spec", "parsed"), [
    ("judge", ("judge", None)),
    ("cmd:gcc -fsyntax-only {file}", ("cmd", "gcc -fsyntax-only {file}")),
    ("factcheck:C:/docs/a b", ("factcheck", "C:/docs/a b")),
    (" rm :path", ("rm", "path")),
])
def test_spec_parsing(spec: str, parsed: tuple) -> None:
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize(("spec", "message"), [
    ("judge:", "has nothing after the colon; write judge or judge:ARG"),  # a lost path
    ("rm: ", "has nothing after the colon"),
    (":x", "has no name"),
])
def test_specs_missing_a_part_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec)


def test_a_plugin_that_raises_on_import_names_its_package(site: Path) -> None:
    install_fake(site, "fake-broken", "fake_broken", "raise RuntimeError('bad build')\n",
                 {"broken": "fake_broken:make"})
    with pytest.raises(ConfigError, match=r"'broken' from package fake-broken 1.2.3 failed "
                                          r"to load .*RuntimeError: bad build"):
        build_critic("broken")
    # Unrelated critics still work, and listing still succeeds with a warning.
    assert build_critic("judge").name == "judge"
    with pytest.warns(UserWarning, match="fake-broken"):
        out = CliRunner().invoke(cli, ["critics", "list"])
    assert out.exit_code == 0
    assert "judge" in out.stdout and "failed to load" in out.stdout


def test_a_name_claimed_by_two_packages_names_both(site: Path) -> None:
    install_fake(site, "fake-one", "fake_one", GOOD, {"dup": "fake_one:make"})
    install_fake(site, "fake-two", "fake_two", GOOD, {"dup": "fake_two:make"})
    _, clashes = discover()
    assert sorted(p.package for p in clashes["dup"]) == ["fake-one", "fake-two"]
    with pytest.raises(ConfigError, match=r"'dup' is registered by two packages: fake-(one|two)"
                                          r".* and fake-(one|two)"):
        build_critic("dup")
    out = CliRunner().invoke(cli, ["critics", "list"])
    assert out.exit_code == 0 and "fake-one" in out.stderr and "fake-two" in out.stderr


def test_a_factory_that_returns_something_else_is_rejected(site: Path) -> None:
    install_fake(site, "fake-good", "fake_good", GOOD, {"weird": "fake_good:not_a_critic"})
    with pytest.raises(ConfigError, match="returned int, not a redline Critic"):
        build_critic("weird")


def test_cli_uses_plugins_by_name(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "REDLINE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    install_fake(site, "fake-good", "fake_good", GOOD, {"contains": "fake_good:make"})
    answers = iter(["nothing here", "it says: hello world"])
    with OpenAICompatServer(handler=lambda r: next(answers)) as server:
        out = CliRunner().invoke(cli, ["refine", "Greet", "--base-url", server.base_url,
                                       "-c", "contains:hello world", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["best"]["candidate"]["text"] == "it says: hello world"
    assert data["rounds"][0]["scored"][0]["critiques"][0]["feedback"] == "Mention 'hello world'."
    shown = CliRunner().invoke(cli, ["critics", "show", "contains"])
    assert "--critic contains:hello" in shown.stdout and "fake-good 1.2.3" in shown.stdout


def test_cli_settings_reach_only_factories_that_declare_them(site: Path) -> None:
    install_fake(site, "fake-good", "fake_good", GOOD + '''
def with_device(arg, *, rm_device="auto"):
    made = make(arg)
    made.device = rm_device
    return made
''', {"contains": "fake_good:make", "dev": "fake_good:with_device"})
    settings = {"rm_device": "cuda:1", "rm_batch_size": 8}
    assert build_critic("dev:x", settings).device == "cuda:1"
    assert build_critic("dev:x", {"rm_device": None}).device == "auto"
    assert build_critic("contains:x", settings).arg == "x"  # make() takes no settings
