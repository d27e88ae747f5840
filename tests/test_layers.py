"""The library's layering, read from its source with `ast` (nothing is imported).

The import graph of digitrec/ counts every ``import`` and ``from ... import`` at any depth (inside
functions and ``if TYPE_CHECKING`` blocks too); ``from digitrec import x`` is an edge to the
module digitrec.x when x is a submodule, else to the package. It must have no cycle (a module
importing itself, as a ``__main__`` guard may, is not one). Nothing in the library imports the
CLI (digitrec.cli) except the ``python -m digitrec`` shim, nor streamlit; and no module takes
another module's private ``_name``, by import or as ``module._name``.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "digitrec"
CLI = "digitrec.cli"
ENTRY_POINT = "digitrec.__main__"  # the one module that may call the CLI


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(root: Path, package: str) -> dict[str, Path]:
    """Module name -> file, for every .py file of the package."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))
            if "__pycache__" not in p.parts}


def _resolve(name: str, modules) -> str:
    """The module `name` is, or the nearest package holding it (a name imported from it)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def _from_base(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The absolute module a ``from ... import`` reads from (relative imports resolved)."""
    base = node.module or ""
    if node.level:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        anchor = package.split(".")
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    return base


def imports(path: Path, name: str, modules) -> list[tuple[str, str]]:
    """(kind, target) for every import in a file: kind "module" with the resolved first-party
    module, or "external" with the top-level name of a third-party package."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, name, path)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, modules)
            found.append(("module", resolved) if resolved else
                         ("external", target.partition(".")[0]))
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports (self-imports left out)."""
    modules = sources(root, package)
    return {name: {t for kind, t in imports(path, name, modules) if kind == "module"} - {name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def private_uses(root: Path, package: str) -> list[str]:
    """"module: imports other._name" for every private name one module takes from another."""
    modules = sources(root, package)
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        bound = {}  # local name -> first-party module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(_from_base(node, name, path), modules)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if full in modules:
                        bound[alias.asname or alias.name] = full
                    elif _private(alias.name) and base and base != name:
                        found.append(f"{name}: imports {base}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in modules:
                        bound[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and bound[node.value.id] != name
                    and _private(node.attr)):
                found.append(f"{name}: uses {bound[node.value.id]}.{node.attr}")
    return sorted(set(found))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# --------------------------------------------------------------------------- the library

@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT, PACKAGE)


def test_the_graph_sees_the_library(graph):
    # A sanity check of the reader itself: known edges, including function-local ones.
    assert "digitrec.worker" in graph["digitrec.jobs"]
    assert "digitrec.tuning.engine" in graph["digitrec.tuning.jobs"]  # inside a function
    assert "digitrec.tuning.config" in graph["digitrec.tuning"]
    assert len(graph) > 30


def test_no_import_cycles(graph):
    assert cycles(graph) == [], "import cycles in digitrec/ (imports inside functions count)"


def test_nothing_in_the_library_imports_the_cli(graph):
    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                       if (t == CLI or t.startswith(CLI + ".")) and m != ENTRY_POINT
                       and not (m == CLI or m.startswith(CLI + ".")))
    assert offenders == []


def test_the_library_never_imports_streamlit():
    modules = sources(ROOT, PACKAGE)
    offenders = sorted(name for name, path in modules.items()
                       for kind, target in imports(path, name, modules)
                       if kind == "external" and target == "streamlit")
    assert offenders == []


def test_no_module_takes_another_modules_private_names():
    assert private_uses(ROOT, PACKAGE) == []


# --------------------------------------------------------------------------- the checker itself

def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    root = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "def f():\n    from pkg.c import g\n",
        "pkg/c.py": "def g():\n    import pkg.a\n",
        "pkg/d.py": "from pkg import a\nimport pkg.d\n",  # a self-import is no cycle
    })
    assert cycles(import_graph(root, "pkg")) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_checker_resolves_relative_and_package_imports(tmp_path):
    root = write_package(tmp_path, {
        "pkg/__init__.py": "from .sub import thing\n",
        "pkg/sub/__init__.py": "from pkg.sub.x import thing\n",
        "pkg/sub/x.py": "from .. import other\nthing = 1\n",
        "pkg/other.py": "import streamlit as st\nfrom pkg.sub import thing\n",
    })
    graph = import_graph(root, "pkg")
    assert graph["pkg"] == {"pkg.sub"} and graph["pkg.sub.x"] == {"pkg.other"}
    assert cycles(graph) == [["pkg.other", "pkg.sub", "pkg.sub.x"]]
    modules = sources(root, "pkg")
    assert ("external", "streamlit") in imports(modules["pkg.other"], "pkg.other", modules)


def test_the_checker_finds_private_names(tmp_path):
    root = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "_secret = 1\ndef _helper(): pass\n__version__ = '1'\n",
        "pkg/b.py": "from pkg.a import _secret, __version__\n",
        "pkg/c.py": "from pkg import a\nx = a._helper()\ny = a.__name__\n",
        "pkg/d.py": "_own = 1\nimport pkg.d as me\nz = me._own\n",  # its own: fine
    })
    assert private_uses(root, "pkg") == ["pkg.b: imports pkg.a._secret", "pkg.c: uses pkg.a._helper"]
