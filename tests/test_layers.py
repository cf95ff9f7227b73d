"""The layer order, checked on the source: envs (world, skills, plans) <- embodied (model, data, training,
evaluation) <- agents (Ray) <- ros_nodes <- the command line (embodied/cli.py). A module imports only from
its own layer or below, and no modules import each other in a circle. Imports inside functions count too:
deferring an import hides a dependency from Python, not from the design."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "embodied", "agents", "ros_nodes")
LAYERS = ("envs", "embodied", "agents", "ros_nodes", "embodied.cli")  # bottom to top


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The index of the most specific layer that holds ``module``."""
    matches = [i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + ".")]
    return max(matches, key=lambda i: len(LAYERS[i]))


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in the file; ``from pkg import mod`` names the module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    modules = set(files)
    return {m: project_imports(p, modules) - {m} for m, p in files.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer(b) > layer(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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


def test_no_module_imports_from_a_layer_above_it():
    assert upward_imports(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_graph_is_read_as_imports_are_written():
    graph = import_graph()
    assert "envs.skills" in graph["envs.plan"]  # from envs.skills import SKILLS
    assert "agents.runtime" in graph["agents.rl"]  # from agents import runtime
    assert "embodied.model" in graph["embodied.eval.vqa"]  # an import inside a function counts


@pytest.mark.parametrize(
    "graph, upward, circles",
    [
        ({"envs.plan": {"embodied.decoding"}, "embodied.decoding": set()}, ["envs.plan -> embodied.decoding"], []),
        ({"embodied.model": {"agents.rl"}, "agents.rl": {"embodied.model"}}, ["embodied.model -> agents.rl"], [["agents.rl", "embodied.model"]]),
        ({"embodied.cli": {"ros_nodes.up"}, "ros_nodes.up": {"agents.runtime"}, "agents.runtime": set()}, [], []),
        ({"embodied.a": {"embodied.b"}, "embodied.b": {"embodied.c"}, "embodied.c": {"embodied.a"}}, [], [["embodied.a", "embodied.b", "embodied.c"]]),
    ],
)
def test_the_check_catches_what_it_should(graph, upward, circles):
    assert upward_imports(graph) == upward
    assert cycles(graph) == circles
