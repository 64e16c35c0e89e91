"""The package's floors (pyproject.toml's import-linter contract, checked by `make test`):
no import cycle between modules, imports at the top of the file, and `cnnlab --help`
answering without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parent.parent / "cnnlab"

# Imported inside a function on purpose: optional extras, or heavy and needed by one feature.
HEAVY_OR_OPTIONAL = {"matplotlib", "sklearn", "keras", "onnx", "onnxruntime", "onnxscript", "fastapi", "uvicorn",
                     "ipywidgets", "IPython", "tensorboard", "h5py", "captum"}


def cycles(graph, modules) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle of imports."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in modules:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for m in sorted(modules):
        if m not in index:
            visit(m)
    return out


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("cnnlab", exclude_type_checking_imports=True, cache_dir=None)
    # a package's __init__ re-exporting its children is not a cycle of code: leave packages out
    modules = {m for m in graph.modules if not (PACKAGE.parent / m.replace(".", "/")).is_dir()}
    assert cycles(graph, modules) == []


def test_the_cycle_finder_finds_a_cycle():
    class Graph:  # a -> b -> c -> a, and d alone
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m):
            return self.edges[m]

    assert cycles(Graph(), {"a", "b", "c", "d"}) == [["a", "b", "c"]]


def function_imports(path: Path):
    """(line, module, has a reason) of each import inside a function of ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = path.read_text(encoding="utf-8").splitlines()
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for stmt in ast.walk(fn):
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                module = stmt.module if isinstance(stmt, ast.ImportFrom) else stmt.names[0].name
                # a comment on the line, or on a line just above it within the same block of imports
                above = lines[stmt.lineno - 2::-1]
                block = []
                for text in above:
                    if not text.strip().startswith(("from ", "import ", "#")):
                        break
                    block.append(text)
                reason = "#" in lines[stmt.lineno - 1] or any(t.strip().startswith("#") for t in block)
                yield stmt.lineno, module or "", reason


def test_imports_inside_functions_are_heavy_or_optional_or_say_why():
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, module, reason in function_imports(path):
            if module.split(".")[0] in HEAVY_OR_OPTIONAL or reason:
                continue
            unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module}")
    assert unexplained == []


def test_help_answers_without_importing_torch():
    code = ("import sys, cnnlab.cli; cnnlab.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
