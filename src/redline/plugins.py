"""Plugins: critics through the ``redline.critics`` entry-point group, presets through
``redline.presets``.

Every critic the CLI knows by name, built-in or third-party, is an entry point in the
group ``redline.critics`` whose object is a *factory*: a callable taking the argument
string after ``NAME:`` in ``--critic NAME:ARG`` (or None) and returning a `Critic`::

    [project.entry-points."redline.critics"]
    readability = "redline_readability:make_critic"

Discovery reads entry-point metadata only; a plugin's code is imported when its critic is
built (or when ``redline critics list`` asks for descriptions). A plugin that fails to
import is reported with a warning naming its package and never breaks other commands.

A preset is registered the same way, in the group ``redline.presets``; its object is a
`redline.workflows.presets.Preset` (built-in presets are registered so too)::

    [project.entry-points."redline.presets"]
    my-method = "my_package:MY_METHOD"
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from redline.critics.base import Critic
from redline.errors import ConfigError, RedlineError

__all__ = [
    "ENTRY_POINT_GROUP",
    "PRESET_GROUP",
    "CriticFactory",
    "CriticPlugin",
    "PluginWarning",
    "build_critic",
    "discover",
    "load_preset",
    "parse_spec",
]

if TYPE_CHECKING:
    from redline.workflows.presets import Preset

ENTRY_POINT_GROUP = "redline.critics"
"""The entry-point group of critic factories."""
PRESET_GROUP = "redline.presets"
"""The entry-point group of presets."""

log = logging.getLogger("redline.plugins")

CriticFactory = Callable[[str | None], Critic]


class PluginWarning(UserWarning):
    """A plugin could not be loaded, or two plugins claim one name."""


@dataclass(frozen=True)
class CriticPlugin:
    """A critic factory (or a preset) registered under a name by an installed package."""

    name: str
    """The name used in ``--critic NAME[:ARG]`` (or ``--preset NAME``)."""
    target: str
    """The factory's import path, ``module:attribute``."""
    package: str
    """The distribution that registers it."""
    version: str
    """That distribution's version."""
    entry_point: EntryPoint = field(repr=False, compare=False)
    kind: str = "critic"
    """``critic`` or ``preset``."""

    def load_object(self) -> Any:
        """Import the registered object.

        Raises:
            ConfigError: the plugin's code failed to import, naming its package.
        """
        try:
            return self.entry_point.load()
        except Exception as exc:  # a plugin's import can fail in any way
            raise ConfigError(
                f"{self.kind} plugin {self.name!r} from package {self.package} "
                f"{self.version} failed to load ({self.target}): {type(exc).__name__}: "
                f"{exc}") from exc

    def load(self) -> CriticFactory:
        """Import the factory.

        Raises:
            ConfigError: the plugin's code failed to import, naming its package.
        """
        factory = self.load_object()
        if not callable(factory):
            raise ConfigError(f"{self.kind} plugin {self.name!r} from package "
                              f"{self.package}: {self.target} is not callable")
        return factory

    def description(self) -> str:
        """The first line of the factory's docstring (imports the plugin)."""
        doc = (inspect.getdoc(self.load()) or "").strip()
        return " ".join(doc.split("\n\n")[0].split())

    def help(self) -> str:
        """The factory's whole docstring: its argument and an example."""
        return inspect.getdoc(self.load()) or "(no description)"


def discover(group: str = ENTRY_POINT_GROUP
             ) -> tuple[dict[str, CriticPlugin], dict[str, list[CriticPlugin]]]:
    """Every plugin registered in `group` (critics by default), without importing any.

    Returns:
        The plugins by name, and the names that several packages claim (with all their
        claimants); a claimed name is left out of the first mapping.
    """
    found: dict[str, list[CriticPlugin]] = {}
    kind = "preset" if group == PRESET_GROUP else "critic"
    for ep in entry_points(group=group):
        dist = ep.dist
        plugin = CriticPlugin(name=ep.name, target=ep.value,
                              package=dist.metadata["Name"] if dist else "?",
                              version=dist.version if dist else "?", entry_point=ep,
                              kind=kind)
        claimants = found.setdefault(ep.name, [])
        if all(p.package != plugin.package for p in claimants):
            claimants.append(plugin)
    unique = {n: ps[0] for n, ps in found.items() if len(ps) == 1}
    clashes = {n: ps for n, ps in found.items() if len(ps) > 1}
    return unique, clashes


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``NAME[:ARG]`` at the first colon; ARG keeps any later colons and spaces.

    Raises:
        ConfigError: the name is empty, or the colon is followed by nothing.
    """
    name, sep, arg = spec.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"critic spec {spec!r} has no name; write NAME or NAME:ARG")
    if sep and not arg.strip():
        raise ConfigError(f"critic spec {spec!r} has nothing after the colon; write {name} "
                          f"or {name}:ARG")
    return name, arg if sep else None


def build_critic(spec: str, options: Mapping[str, Any] | None = None) -> Critic:
    """Build the critic a ``--critic`` spec names, through its plugin's factory.

    Args:
        spec: ``NAME`` or ``NAME:ARG``.
        options: command-line settings (e.g. ``rm_device``); each is passed as a keyword
            argument to factories that declare a parameter of that name, and to no other.

    Raises:
        ConfigError: unknown name (listing the known ones), a name two packages claim
            (naming both), a plugin that fails to load, or a bad argument.
    """
    name, arg = parse_spec(spec)
    plugin = _find(ENTRY_POINT_GROUP, name, name)
    factory = plugin.load()
    try:
        made: Any = factory(arg, **_accepted(factory, options or {}))
    except RedlineError:
        raise
    except Exception as exc:  # a plugin's factory can fail in any way; name the plugin
        raise ConfigError(f"critic {name!r} (package {plugin.package}): "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(made, Critic):
        raise ConfigError(f"critic plugin {name!r} from package {plugin.package} returned "
                          f"{type(made).__name__}, not a redline Critic")
    return made


def _find(group: str, name: str, given: str) -> CriticPlugin:
    """The one plugin of `group` registered as `name` (`given`: as the user wrote it).

    Raises:
        ConfigError: no plugin has the name (listing the known ones), or two packages
            claim it (naming both).
    """
    kind = "preset" if group == PRESET_GROUP else "critic"
    plugins, clashes = discover(group)
    if name in clashes:
        who = " and ".join(f"{p.package} {p.version} ({p.target})" for p in clashes[name])
        raise ConfigError(f"{kind} name {name!r} is registered by two packages: {who}; "
                          "uninstall one of them")
    if name not in plugins:
        known = ", ".join(sorted(plugins)) or "none installed"
        raise ConfigError(f"unknown {kind} {given!r} (known: {known}); "
                          f"see `redline {kind}s list`")
    return plugins[name]


def _accepted(factory: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in options.items() if k in params and v is not None}


def load_preset(name: str) -> Preset:
    """The preset registered as `name` (``self-debug``; ``self_debug`` is accepted too).

    Raises:
        ConfigError: unknown name (listing the known ones), a name two packages claim, a
            plugin that fails to load or is not a `Preset`.
    """
    from redline.workflows.presets import Preset

    wanted = name.strip().lower().replace("_", "-")
    plugin = _find(PRESET_GROUP, wanted, name)
    preset = plugin.load_object()
    if not isinstance(preset, Preset):
        raise ConfigError(f"preset plugin {wanted!r} from package {plugin.package}: "
                          f"{plugin.target} is {type(preset).__name__}, not a "
                          "redline.workflows.presets.Preset")
    return preset
