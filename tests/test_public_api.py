"""The curated public API, and the promise that `import redline` stays light."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import redline
import redline.agents
import redline.critics
import redline.feedback_sources
import redline.llm
import redline.plugins
import redline.testing
import redline.workflows

# What README.md documents as `redline.*`. Changing the public API changes this list.
DOCUMENTED = {
    "Budget", "BudgetExceeded", "Candidate", "ChatModel", "ConfigError", "Critic",
    "CriticError", "Critique", "FeedbackSourceError", "LLMError", "LLMJudge", "Panel",
    "Price", "Progress", "RedlineError", "RefineResult", "Round", "ScoredCandidate", "StopReason",
    "Task", "Usage", "__version__", "acompare", "arefine", "build_refine_graph", "compare",
    "critic", "refine",
}


def test_all_is_the_documented_api() -> None:
    assert set(redline.__all__) == DOCUMENTED
    assert sorted(redline.__all__) == redline.__all__


def test_every_exported_name_resolves_and_has_a_docstring() -> None:
    import redline.workflows.presets

    modules = (redline, redline.llm, redline.critics, redline.workflows, redline.testing,
               redline.agents, redline.feedback_sources, redline.plugins,
               redline.workflows.presets)
    for module in modules:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"


def test_readme_mentions_every_public_name() -> None:
    from pathlib import Path
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    # As a whole name in backticks (`critic` is not found inside "critics").
    missing = [n for n in DOCUMENTED - {"__version__"}
               if not re.search(rf"`(redline\.)?{re.escape(n)}(\(|`)", readme)]
    assert not missing, f"README.md does not document {missing}"


def test_import_redline_does_not_load_heavy_modules() -> None:
    code = ("import sys, redline, redline.types, redline.errors; "
            "print(' '.join(m for m in ('torch', 'transformers', 'langgraph', 'openai', "
            "'llama_cpp', 'httpx', 'aiohttp', 'bm25s', 'jsonschema', 'langchain_core') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


def test_the_loop_does_not_load_torch() -> None:
    code = ("import sys, redline; from redline.testing import ScriptedChat; "
            "redline.refine('Q', model=ScriptedChat(['a']), critics=[lambda t: 1.0]); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False False"


def test_the_human_critic_is_public_and_light() -> None:
    from redline.critics.human import HumanCritic
    from redline.errors import HumanInputNeeded, RedlineError

    assert redline.critics.HumanCritic is HumanCritic
    assert issubclass(HumanInputNeeded, RedlineError)
    # The CLI lists and builds critics without LangGraph: graph mode imports it late.
    code = ("import sys, redline.critics.human; redline.critics.human.human_critic(None); "
            "print('langgraph' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
