"""The layout: subsystems import one way, and no module imports one that imports it back.

The import graph is read from the source (every ``import``, at module level
or inside a function), so a cycle dodged by a function-level import is a
cycle here too.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("keras_vit", "keras_vit_cli")

# Leaf modules every subsystem may use; they import nothing of keras_vit.
BASE = {
    "keras_vit.atomic",
    "keras_vit.validation",
    "keras_vit.messages",
    "keras_vit.extras",
    "keras_vit.memory",
    "keras_vit.cache",
    "keras_vit.digests",
}
# subsystem -> the subsystems it may import (DESIGN.md: cli -> train / export /
# analysis -> model -> weights, data).
ALLOWED = {
    "keras_vit.weights": set(),
    "keras_vit.data": set(),
    "keras_vit.kernels": set(),
    "keras_vit.model": {"keras_vit.weights", "keras_vit.data", "keras_vit.kernels"},
    "keras_vit.train": {"keras_vit.model", "keras_vit.weights", "keras_vit.data"},
    "keras_vit.export": {"keras_vit.model", "keras_vit.data"},
    "keras_vit.analysis": {"keras_vit.model", "keras_vit.data"},
}


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules():
    return {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def imported(tree, modules, current):
    """Project modules a module's source imports (explicit edges only)."""
    found = set()
    package = (
        current
        if current in modules and modules[current].name == "__init__.py"
        else current.rpartition(".")[0]
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name in modules)
    found.discard(current)
    return found


def import_graph():
    modules = all_modules()
    return {
        name: imported(ast.parse(path.read_text()), modules, name) for name, path in modules.items()
    }


def subsystem(name):
    parts = name.split(".")
    if parts[0] == "keras_vit_cli":
        return "keras_vit_cli"
    return ".".join(parts[:2]) if len(parts) > 1 else name


def find_cycle(graph):
    """One import cycle as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return stack[stack.index(child) :] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40  # the reader sees every module
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = import_graph()
    graph["keras_vit.weights.readers"] = graph["keras_vit.weights.readers"] | {
        "keras_vit.model.vit"
    }
    assert find_cycle(graph) is not None


def test_subsystems_import_one_way():
    wrong = []
    for name, targets in import_graph().items():
        source = subsystem(name)
        if source not in ALLOWED:
            continue
        for target in targets:
            other = subsystem(target)
            if other != source and target not in BASE and other not in ALLOWED[source]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_base_modules_import_nothing_of_the_project():
    graph = import_graph()
    for name in BASE:
        assert graph[name] == set(), name


def test_the_command_line_imports_keras_vit_only_inside_functions():
    """Building the parser (``--help``, argument errors) must not import TensorFlow."""
    offenders = []
    for path in (ROOT / "keras_vit_cli").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in ("keras_vit", "keras", "tensorflow")
            ]
    assert not offenders, offenders
