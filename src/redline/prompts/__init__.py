"""Every prompt redline sends, as a template file, and the one function that fills them.

Each prompt is a `string.Template` file ``redline/prompts/NAME.txt`` (placeholders are
``$name``; a literal dollar is ``$$``). `render` fills one, by name or from template
text, and a placeholder left without a value is an error, not a silent ``$name`` in
the prompt. The reviser and the judge take their prompt as an argument (a name below or
template text), so a preset changes a prompt without copying an agent.

The prompts and their placeholders:

- ``generate_system``: the generator's (and reviser's) system message.
- ``revise_rewrite``: asks for the whole answer again; ``$task``, ``$answer``,
  ``$feedback``, ``$memory``.
- ``revise_edit``: asks for search/replace blocks; ``$task``, ``$answer``, ``$feedback``,
  ``$memory``.
- ``revise_memory``: the lessons of earlier attempts (Reflexion) inside a revise prompt;
  ``$lessons``.
- ``revise_no_feedback``: what the reviser reads when no critic said what to change.
- ``judge_system``: the LLM judge's system message.
- ``judge_user``: the judge's request; ``$task``, ``$rubric``, ``$open``, ``$answer``,
  ``$close``.
- ``judge_rubric``: the judge's default rubric.
- ``judge_reask``: the judge's second try; ``$problem``.
- ``factcheck_claims_system``: the fact checker's claim extraction, system message.
- ``factcheck_claims_user``: the claim extraction; ``$task``, ``$open``, ``$answer``,
  ``$close``, ``$max_claims``.
- ``factcheck_claims_reask``: its second try; ``$problem``.
- ``factcheck_verify_system``: the fact checker's verification, system message.
- ``factcheck_verify_user``: the verification; ``$open``, ``$claims``, ``$close``, ``$n``.
- ``factcheck_verify_reask``: its second try; ``$problem``, ``$n``.
- ``gentests_system``: the test writer's system message (generated tests).
- ``gentests_user``: the request for tests; ``$k``, ``$target``, ``$open``, ``$task``,
  ``$close``.
- ``gentests_reask``: its second try; ``$problem``, ``$k``.
- ``revise_repeat``: the reviser's second try after a reply that repeated the answer
  (``on_repeat="resample"``); ``$feedback``.
- ``selfdebug_system``: Self-Debug's reviser's system message.
- ``selfdebug_explain``: asks to explain the code and trace a failing test, no fix;
  ``$task``, ``$answer``, ``$feedback``.
- ``selfdebug_fix``: asks for the fixed code in full; ``$task``, ``$answer``,
  ``$feedback``, ``$explanation``, ``$memory``.
- ``selfdebug_explanation``: the explanation inside ``selfdebug_fix``; ``$explanation``.
- ``interpreter_system``: the interpreter verifier's system message (CRITIC's program).
- ``interpreter_user``: the request for a program computing the answer; ``$open``,
  ``$task``, ``$close``.
- ``interpreter_reask``: its second try; ``$problem``.
- ``reflect_system``: the reflector's system message (Reflexion).
- ``reflect_user``: the request for a reflection on a failed attempt; ``$task``,
  ``$answer``, ``$feedback``, ``$memory``.
- ``reflexion_attempt``: Reflexion's fresh attempt guided by the reflections; ``$task``,
  ``$memory``, ``$given``.
- ``revise_given``: the text a task gave to work on, inside a reviser's prompt; ``$given``.
- ``selfrefine_revise``: Self-Refine's refinement of the last answer with the history of
  feedback; ``$task``, ``$answer``, ``$feedback``, ``$memory``.

``$open`` and ``$close`` are the random markers that fence untrusted text.

Example:
    >>> from redline.prompts import render
    >>> render("revise_memory", lessons="- cite the source")
    'Lessons from earlier attempts:\\n- cite the source'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from importlib.resources import files
from string import Template

from redline.errors import ConfigError

__all__ = ["check", "names", "render", "text"]

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def names() -> list[str]:
    """The names of the prompts that ship with redline, sorted."""
    return sorted(p.name.removesuffix(".txt") for p in files(__name__).iterdir()
                  if p.name.endswith(".txt"))


@cache
def text(name: str) -> str:
    """The template text of the prompt `name` (to start a prompt of your own from).

    Raises:
        ConfigError: no prompt has that name.
    """
    if not _NAME.match(name) or name not in names():
        raise ConfigError(f"no prompt named {name!r}; the prompts are: {', '.join(names())}")
    return files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8")


@cache
def _template(prompt: str) -> tuple[str, Template, tuple[str, ...]]:
    """What to call `prompt` in errors, its template and its placeholders (kept: the
    packaged prompts do not change while the process runs, and a batch renders them
    thousands of times)."""
    if _NAME.match(prompt):
        template = _compiled(text(prompt))
        what = f"prompt {prompt!r}"
    else:
        template = _compiled(prompt)
        what = "the prompt template"
    return what, template, tuple(template.get_identifiers())


def _compiled(source: str) -> Template:
    template = Template(source)
    if not template.is_valid():
        # Template reports the bad placeholder's position only through substitute.
        try:
            template.substitute({k: "" for k in template.get_identifiers()})
        except ValueError as exc:
            raise ConfigError(f"invalid prompt template ({exc}); write a literal $ as $$") \
                from None
    return template


def render(prompt: str, /, **values: object) -> str:
    """A prompt filled with `values`, without surrounding whitespace.

    Args:
        prompt: a prompt's name (see the module) or template text (``$name``
            placeholders). A single lower-case word is taken for a name.
        **values: a value for every placeholder of the template (converted with
            ``str``); values the template does not use are ignored.

    Raises:
        ConfigError: an unknown name, an invalid template, or a placeholder without a
            value.
    """
    what, template, identifiers = _template(prompt)
    missing = [k for k in identifiers if k not in values]
    if missing:
        raise ConfigError(f"{what} needs a value for {', '.join('$' + m for m in missing)} "
                          f"(given: {', '.join(sorted(values)) or 'none'})")
    return template.substitute(values).strip()


def check(prompt: str, *, allowed: Iterable[str], required: Iterable[str] = ()) -> None:
    """Check, before any run, that `prompt` can be rendered by its user.

    Args:
        prompt: a prompt's name or template text, as `render` takes it.
        allowed: the placeholders the user of the prompt fills.
        required: the placeholders the prompt must contain.

    Raises:
        ConfigError: an unknown name, an invalid template, a placeholder outside
            `allowed`, or a `required` one missing.
    """
    what, _, identifiers = _template(prompt)
    used = set(identifiers)
    allowed = set(allowed)
    unknown = sorted(used - allowed)
    if unknown:
        raise ConfigError(f"{what} uses {', '.join('$' + u for u in unknown)}, which is not "
                          f"filled here; it can use {', '.join('$' + a for a in sorted(allowed))}")
    absent = [r for r in required if r not in used]
    if absent:
        raise ConfigError(f"{what} must contain {', '.join('$' + a for a in absent)}")
