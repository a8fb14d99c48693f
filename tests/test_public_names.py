"""The package's front door: every public name imports, and the names ``fastsdf.__getattr__`` imports
on first use are spelled out for type checkers and IDEs (its ``if TYPE_CHECKING:`` imports) exactly
as it imports them, so that the two cannot drift apart."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import fastsdf


def _type_checking_imports() -> dict[str, str]:
    """name -> module of the imports under ``if TYPE_CHECKING:`` in fastsdf/__init__.py."""
    tree = ast.parse(Path(fastsdf.__file__).read_text())
    blocks = [node for node in tree.body
              if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    assert len(blocks) == 1 and not blocks[0].orelse
    names: dict[str, str] = {}
    for node in blocks[0].body:
        assert isinstance(node, ast.ImportFrom) and node.level == 0, ast.dump(node)
        for alias in node.names:
            assert alias.asname is None and alias.name not in names, alias.name
            names[alias.name] = node.module
    return names


def test_every_public_name_imports() -> None:
    namespace: dict[str, object] = {}
    exec("from fastsdf import *", namespace)  # noqa: S102 - the star import resolves every name in __all__
    assert set(fastsdf.__all__) <= set(namespace)
    assert len(set(fastsdf.__all__)) == len(fastsdf.__all__)


def test_type_checkers_see_exactly_the_lazy_names() -> None:
    assert _type_checking_imports() == fastsdf._LAZY
    assert set(fastsdf._LAZY) <= set(fastsdf.__all__)
    for name, module in fastsdf._LAZY.items():
        assert getattr(fastsdf, name) is getattr(importlib.import_module(module), name), name
