"""The package's shape: imports run downwards through the layers of docs/architecture.md, and no
module imports itself back round a circle (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tfmssass"

#: Layer of each subpackage, lowest first; a module may import its own layer or lower ones.
LAYERS = {"core": 0, "io": 1, "ops": 1, "data": 2, "synth": 2, "stages": 3, "serving": 4, "scoring": 5,
          "stats": 6, "review": 6, "pacs": 6,
          "cli": 7}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports anywhere in its text."""
    modules = _modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tfmssass"):
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("tfmssass")]
            else:
                continue
            named = [t for t in targets[:-1] if t in modules]  # "from pkg import a, b": the modules a and b
            for target in named or targets[-1:]:
                if target in modules and target not in (name, "tfmssass"):
                    graph[name].add(target)
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_relative_imports_are_not_used():
    """Absolute imports keep a module's dependencies readable where it is moved."""
    relative = [f"{path.name}:{node.lineno}" for path in _modules().values()
                for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(node, ast.ImportFrom) and node.level]
    assert not relative


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_imports_run_downwards_through_the_layers():
    upward = [f"{m} -> {t}" for m, targets in import_graph().items() for t in targets if layer(t) > layer(m)]
    assert not upward, upward


def test_every_subpackage_has_a_layer():
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} | {"cli"} == set(LAYERS)


def test_the_scored_folder_and_the_reader_workstation_start_without_tensorflow():
    """Reading a scored folder, serving it to readers and comparing it with references run no model:
    importing TensorFlow there would cost seconds at every start (the review server, `evaluate
    agreement`, a second process asking for the folder's lock)."""
    import subprocess
    import sys

    probe = ("import sys, tfmssass.scoring.folder, tfmssass.review.server, tfmssass.stats.agreement; "
             "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
