"""The package's layers import only downwards, and no modules import each other in a circle.

Lowest first. A module may import its own layer and the layers below it, never above, not even inside a
function (a lazy import hides a cycle, it does not remove it).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src" / "transferlab"

LAYERS = [
    # errors and I/O, and small pure helpers every layer may use
    {"errors", "faults", "units", "figures", "nn_utils", "safe_io", "outputs", "sections", "specs", "stats",
     "progress", "console", "onnx_predictor"},
    {"models", "data"},  # what a model is, and what data is
    {"strategies"},  # how a model adapts (PEFT methods own their saved format)
    {"training"},  # the loop
    {"runs", "predict"},  # a run directory: start, resume, load
    {"modules", "pretraining", "export"},  # task modules: merge, several on one base; pre-training runs; deployable exports
    {"diagnostics", "contamination"},  # what fine-tuning did (each declares its report section); overlap
    {"compare", "ranking"},  # the grid and its report; ranking models before fine-tuning (its report renders alike)
    {"tracking", "labs"},  # runs and grids logged to MLflow or TensorBoard; the chapter's claims as labs
    {"cli", "__main__"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "transferlab" or len(parts) == 1:
        return None
    return next((i for i, names in enumerate(LAYERS) if parts[1] in names), None)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of transferlab in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(node.lineno, node.module)]
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]  # `from pkg import module`
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            base = _module_name(path).split(".")
            base = base[:len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
            module = ".".join(base + ([node.module] if node.module else []))
            out += [(node.lineno, module)] + [(node.lineno, f"{module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in out if m.startswith("transferlab")]


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for _, m in _imports(path) if m in files and m != name}
    return graph


def test_every_top_level_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
            if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.stem != "__init__"}
    assert tops <= set().union(*LAYERS), f"put {sorted(tops - set().union(*LAYERS))} in a layer"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        me = _layer(_module_name(path))
        for line, module in _imports(path):
            theirs = _layer(module)
            if me is not None and theirs is not None and theirs > me:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module}")
    assert not upward, "imports that run upwards:\n" + "\n".join(sorted(set(upward)))


def test_no_import_circles():
    graph = _graph()
    # A package's __init__ that only re-exports its modules is not a circle with them: drop the edges from a
    # module to its own package (importing `transferlab.x.y` runs `transferlab.x` first either way).
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    seen, stack, circles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            circles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)
