"""Module boundaries: no module imports another package's private module (or a private
name of another package's module). What another package needs is public.

A private module (``_name``) may be imported by its own package and that package's
subpackages; ``redline._files`` is the root package's, so every subpackage may use it,
while ``redline.llm._base`` is ``redline.llm``'s alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def private_imports(src: Path) -> list[str]:
    """``module: imported.name`` for every import that crosses into another package's
    private module or name."""
    found = []
    for path in sorted(src.rglob("*.py")):
        parts = path.with_suffix("").relative_to(src).parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                pieces = name.split(".")
                if pieces[0] != "redline":
                    continue
                for i, piece in enumerate(pieces):
                    if piece.startswith("_") and not piece.startswith("__"):
                        owner = ".".join(pieces[:i])
                        if package != owner and not package.startswith(owner + "."):
                            found.append(f"{module}: {name}")
                        break
    return sorted(set(found))


def test_no_module_imports_another_packages_private_module() -> None:
    assert private_imports(SRC) == []


def test_the_check_finds_a_crossing(tmp_path: Path) -> None:
    pkg = tmp_path / "redline" / "critics"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mine.py").write_text("from redline.llm._base import ChatModel\n"
                                 "from redline._files import read_config_text\n"
                                 "from redline.critics._ask import ask\n")
    assert private_imports(tmp_path) == ["redline.critics.mine: redline.llm._base",
                                         "redline.critics.mine: redline.llm._base.ChatModel"]
