"""Package layout: ``theory`` and ``numerics`` never import ``verify``, ``theory`` has no import cycle, and every
``theory`` module imports on its own in a fresh interpreter.

Imports are read from the source with ``ast``, wherever they stand (a function body included): an import
deferred into a function to dodge a cycle is still a cycle.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def module_names(package: str, root: Path = ROOT) -> dict[str, Path]:
    """Dotted name → file of every module of ``package`` (the package itself included, as ``package``)."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(path: Path, known: set[str]) -> set[str]:
    """The modules that ``path`` imports, anywhere in it: ``from pkg import name`` counts as ``pkg.name`` when
    that is a module in ``known``, else as ``pkg``.  Relative imports are not used in this project and are
    refused rather than misread."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise ValueError(f"{path}: relative import at line {node.lineno}")
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in known else node.module)
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the modules of ``modules`` it imports (imports from outside left out)."""
    known = set(modules)
    return {name: imported(path, known) & known - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None when it has none (depth-first search, three colours)."""
    state: dict[str, str] = {}  # "open": on the current path, "done": every path from it explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def verify_imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the ``verify`` modules it imports, for the modules that import any."""
    found = {name: {m for m in imported(path, set()) if m == "verify" or m.startswith("verify.")}
             for name, path in modules.items()}
    return {name: hits for name, hits in found.items() if hits}


THEORY = module_names("theory")
NUMERICS = module_names("numerics")


def test_theory_and_numerics_never_import_verify():
    """verify builds on theory and numerics; an import the other way makes the packages one."""
    assert verify_imports(THEORY | NUMERICS) == {}


def test_theory_has_no_import_cycle():
    graph = import_graph(THEORY)
    assert graph["theory.registry"] >= {"theory.landscape", "theory.canonical", "theory.manifold",
                                        "theory.multistate"}  # the graph is read, not empty
    assert find_cycle(graph) is None


def test_theory_and_numerics_together_have_no_import_cycle():
    """numerics.dynamics uses theory.canonical and theory.multistate uses numerics.markov: no cycle through both."""
    graph = import_graph(THEORY | NUMERICS)
    assert "theory.canonical" in graph["numerics.dynamics"] and "numerics.markov" in graph["theory.multistate"]
    assert find_cycle(graph) is None


@pytest.mark.parametrize("name", sorted(THEORY))
def test_each_theory_module_imports_alone_in_a_fresh_interpreter(name):
    """Imported first, each module must find everything it needs already defined (a cycle fails here for
    some import order)."""
    done = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr


# --- the checks themselves can fail -------------------------------------------------------------------------

def write_package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return module_names("pkg", root)


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path):
    modules = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/top.py": "def gather():\n    from pkg.low import helper  # deferred: still a cycle\n    return helper\n",
        "pkg/low.py": "from pkg import top as T\n\ndef helper():\n    return T\n",
        "pkg/leaf.py": "import math\n",
    })
    assert import_graph(modules) == {"pkg": set(), "pkg.top": {"pkg.low"}, "pkg.low": {"pkg.top"}, "pkg.leaf": set()}
    assert find_cycle(import_graph(modules)) in (["pkg.low", "pkg.top", "pkg.low"], ["pkg.top", "pkg.low", "pkg.top"])


def test_an_acyclic_diamond_is_not_a_cycle():
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_an_import_of_verify_anywhere_is_found(tmp_path):
    modules = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def main():\n    from verify.cli import Parser\n    return Parser\n",
        "pkg/b.py": "import verify\n",
        "pkg/c.py": "import verifyish\nfrom numerics import markov\n",
    })
    assert verify_imports(modules) == {"pkg.a": {"verify.cli"}, "pkg.b": {"verify"}}
