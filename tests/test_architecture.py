"""The package's shape: no import cycles (function-level imports included), lazy imports
only with a reason, and a README map that names modules that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mcustt"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported(node: ast.Import | ast.ImportFrom, here: str, is_pkg: bool) -> list[str]:
    """The mcustt modules an import statement loads (a ``from m import x`` loads ``m``,
    and ``m.x`` too when ``x`` is a submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = here if is_pkg else here.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{base}" if base else package
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """Every import edge between mcustt modules (module level, function level and
    ``TYPE_CHECKING`` alike), and the function-level ones as (module, line, target)."""
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    lazy: list[tuple[str, int, str]] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        in_function: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                in_function.update(id(n) for n in ast.walk(fn) if n is not fn)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _imported(node, name, is_pkg):
                if target not in modules or target == name:
                    continue
                # Loading a.b.c runs a/__init__ and a/b/__init__ first.
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    if prefix in modules and prefix != name:
                        edges[name].add(prefix)
                if id(node) in in_function:
                    lazy.append((name, node.lineno, target))
    return edges, lazy


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _ancestors_only(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop the edges from a module to the packages that contain it: Python has already
    started loading those when the module runs, so they are not cycles."""
    return {
        name: {t for t in targets if not name.startswith(t + ".") and t != "mcustt"}
        for name, targets in edges.items()
    }


def test_no_import_cycle_even_counting_function_level_imports() -> None:
    edges, _ = _graph()
    assert _cycles(_ancestors_only(edges)) == []


def test_the_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_every_function_level_import_says_why() -> None:
    """A lazy import of an mcustt module is allowed where loading it up front would cost
    something (a heavy dependency for a light caller), with a comment saying so."""
    _, lazy = _graph()
    unexplained = []
    for module, line, target in lazy:
        lines = _modules()[module].read_text().splitlines()
        here, above = lines[line - 1], lines[line - 2] if line >= 2 else ""
        if "#" not in here and not above.strip().startswith("#"):
            unexplained.append(f"{module}:{line} imports {target}")
    assert unexplained == []


def test_readme_architecture_names_modules_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(mcustt/[\w/]+(?:\.py|/))`", section))
    assert len(named) >= 20, "the Architecture section maps the package"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert missing == []
    # And every module of the package is on the map (directly or through its folder).
    unmapped = sorted(
        str(p.relative_to(ROOT))
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py"
        and str(p.relative_to(ROOT)) not in named
        and not any(str(p.relative_to(ROOT)).startswith(d) for d in named if d.endswith("/"))
    )
    assert unmapped == []
