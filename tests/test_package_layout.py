"""The package is grouped by role, lower layers never import upper ones, and no module imports itself
back through another (no import cycles, lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# lower number = lower layer; a module may import its own layer or a lower one
LAYERS = {"utils": 0, "core": 1, "scores": 1, "data": 2, "handlers": 3, "report": 3, "workflows": 4, "experiments": 5}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "scripts").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scripts"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("scripts"))
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_sits_in_a_role_package():
    loose = [p.name for p in (ROOT / "scripts").glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules outside a role package: {loose}"
    assert {m.split(".")[1] for m in _modules() if m.count(".") >= 1} <= set(LAYERS)


def test_no_module_imports_a_higher_layer():
    upward = []
    for module, path in _modules().items():
        for imported in _imports(path):
            if _layer(module) is not None and _layer(imported) is not None and _layer(imported) > _layer(module):
                upward.append(f"{module} -> {imported}")
    assert upward == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_the_cycle_search_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    modules = _modules()
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    assert _cycles(graph) == []


def test_no_module_is_much_over_500_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 550}
    assert long == {}
