"""The engine's import order, read from the source with `ast` (nothing is imported).

Bottom to top (README, "Architecture"): a module imports only its own package, packages
of its own layer that do not import it back, and the layers below; no import cycles, also
none inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "engine"

LAYERS = [
    (
        "errors",
        "limits",
        "numerics",
        "randomness",
        "threads",
        "images",
        "device",
        "hamiltonian",
        "processes",
        "haar",
        "dct",
    ),
    ("sequence", "data"),
    ("models",),
    ("inference", "diagnostics", "traversal"),
    ("store", "training"),
    ("projection", "loading", "importing", "adapters", "cli"),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The engine modules a file imports anywhere in it (functions and TYPE_CHECKING included).

    `from a.b import c` names a.b.c when that is a module, else a.b; a parent package's
    __init__ runs on every such import but is not counted as a dependency of its own."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = engine_modules(root)
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def package(module: str) -> str:
    """The layer unit of a module: engine.models.vae -> models, engine.errors -> errors."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    bad = []
    for source, targets in graph.items():
        for target in targets:
            low, high = package(source), package(target)
            if low and high and low != high and RANK[high] > RANK[low]:
                bad.append((source, target))
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(start):
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for source, targets in graph.items():
        for target in targets:
            if package(source) and package(target) and package(source) != package(target):
                out.setdefault(package(source), set()).add(package(target))
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph(ENGINE)


def test_every_engine_package_has_a_layer(graph):
    unplaced = sorted({package(m) for m in graph} - set(RANK) - {""})
    assert not unplaced, f"place these engine packages in LAYERS (and the README's architecture paragraph): {unplaced}"


def test_no_module_imports_a_layer_above_its_own(graph):
    bad = upward_imports(graph)
    lines = [f"{s} (layer {RANK[package(s)]}) imports {t} (layer {RANK[package(t)]})" for s, t in bad]
    assert not bad, "upward imports:\n" + "\n".join(lines)


def test_no_import_cycles_between_modules(graph):
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_cycles_between_packages(graph):
    found = cycles(package_graph(graph))
    assert not found, "packages that import each other:\n" + "\n".join(" <-> ".join(c) for c in found)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "engine" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "engine"


def test_the_checks_find_an_upward_import_hidden_in_a_function(tmp_path):
    engine = write(
        tmp_path,
        {
            "__init__.py": "",
            "models/__init__.py": "",
            "models/vae.py": "def f():\n    from engine.diagnostics.tc import total_correlation\n",
            "diagnostics/__init__.py": "",
            "diagnostics/tc.py": "from engine import errors\n",
            "errors.py": "",
        },
    )
    assert upward_imports(import_graph(engine)) == [("engine.models.vae", "engine.diagnostics.tc")]


def test_the_checks_find_cycles_between_modules_and_packages(tmp_path):
    engine = write(
        tmp_path,
        {
            "__init__.py": "",
            "store/__init__.py": "",
            "store/runs.py": "from . import logger\n",
            "store/logger.py": "from engine.store.runs import Run\n",
            "training/__init__.py": "import engine.store.runs\n",
            "store/imports.py": "from engine.training import RunSpec\n",
        },
    )
    found = import_graph(engine)
    assert cycles(found) == [["engine.store.logger", "engine.store.runs"]]
    assert cycles(package_graph(found)) == [["store", "training"]]
    assert upward_imports(found) == []  # store and training share a layer


def test_each_package_states_its_layer_in_its_docstring():
    missing = []
    for init in sorted(ENGINE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        layer = RANK[init.parent.name]
        if f"Layer {layer}" not in doc:
            missing.append(f"{init.parent.name} (layer {layer})")
    assert not missing, f"package docstrings that do not state their layer: {missing}"
