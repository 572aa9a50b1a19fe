"""The layout is the architecture (DESIGN.md): import direction, no cycles, small modules and functions,
a light ``import connect``, and a README that names every package."""

import ast
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("connect", "theory")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _sources():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_import_contracts_of_pyproject_hold():
    """``lint-imports`` (import-linter, contracts in pyproject.toml): cli -> studies -> {twolayer, lm} -> core
    -> models -> errors, twolayer and lm independent, the core free of families, studies and commands."""
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the test extra: pip install -e '.[test]'"
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and "KEPT" in proc.stdout


def _import_graph() -> dict[str, set[str]]:
    grimp = pytest.importorskip("grimp")  # installed with import-linter
    graph = grimp.build_graph(*PACKAGES)
    return {m: set(graph.find_modules_directly_imported_by(m)) & graph.modules for m in graph.modules}


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (the import cycles)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_strongly_connected_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(edges) == [["a", "b", "c"]]


def test_no_import_cycles_in_connect_and_theory():
    assert strongly_connected(_import_graph()) == []


def test_no_module_over_400_lines_and_no_function_over_60():
    long_modules, long_functions = [], []
    for path in _sources():
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{rel} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name} ({n} lines)")
    assert long_modules == [] and long_functions == []


def test_import_connect_loads_neither_matplotlib_nor_a_study():
    code = ("import sys, connect; connect.__version__; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'matplotlib' or m.startswith(('connect.studies', 'connect.cli', "
            "'connect.lm', 'connect.twolayer', 'theory'))]; print(bad)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_public_names_resolve_lazily():
    import connect

    for name in connect.__all__:
        assert getattr(connect, name) is not None, name
    with pytest.raises(AttributeError):
        connect.no_such_name  # noqa: B018


def test_readme_layout_names_every_package():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    packages = sorted({p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "connect").rglob("__init__.py")} - {"connect"})
    missing = [p for p in packages if p.rsplit("/", 1)[-1] + "/" not in layout]
    assert missing == []


def test_every_core_module_is_in_the_contracts():
    """A new top-level module of connect/ joins the core layer of pyproject.toml's contracts (or they miss it)."""
    text = (ROOT / "pyproject.toml").read_text()
    core = sorted(p.stem for p in (ROOT / "connect").glob("*.py") if p.stem not in ("__init__", "errors"))
    layer = next(line for line in text.splitlines() if "connect.barrier : " in line)
    assert [m for m in core if f"connect.{m}" not in layer.replace('"', " ").split()] == []
