"""Prompt templates, shipped as package data (``agents/prompts/*.txt``)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from string import Template


@cache
def template(name: str) -> Template:
    """The template ``prompts/NAME.txt``; placeholders are ``$name``."""
    return Template(files("redline.agents").joinpath("prompts", f"{name}.txt")
                    .read_text(encoding="utf-8"))


def render(name: str, **values: str) -> str:
    """Fill a template; every placeholder must be given."""
    return template(name).substitute(values).strip()
