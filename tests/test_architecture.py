"""The stack holds: no import cycle in src/seglab, counting every import statement (inside functions and under
TYPE_CHECKING too), and no module imports another module's private name."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "seglab").rglob("*.py"))}


def imported(path: Path, known: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(module, names taken from it, line) for every import statement of a seglab module in `path`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "seglab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if base.split(".")[0] != "seglab":
                continue
            names = [a.name for a in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
            rest = [n for n in names if f"{base}.{n}" not in known]
            out += [(m, [], node.lineno) for m in submodules]
            if rest:
                out.append((base, rest, node.lineno))
    return out


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m, _, _ in imported(path, known) if m in known and m != name}
            for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_src_seglab_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 40  # every module was read
    assert "seglab.evaluate" in graph["seglab.train"]  # imports at module level are read
    assert "seglab.models.segformer_hf" in graph["seglab.finetune"]  # ... and inside functions
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_another_modules_private_name():
    known = modules()
    files = [*known.values(), *sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    offences = []
    for path in files:
        for module, names, line in imported(path, known) if path.is_relative_to(SRC) else _absolute(path):
            offences += [f"{path.relative_to(ROOT)}:{line} takes {module}.{n}" for n in names
                         if n.startswith("_") and not n.startswith("__")]
    assert not offences, "\n".join(offences)


def _absolute(path: Path) -> list[tuple[str, list[str], int]]:
    """Imports of a test or benchmark file: `from X import _name` of any local module (seglab, tests, benchmarks)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            top = node.module.split(".")[0]
            local = top in ("seglab", "benchmarks") or (ROOT / "tests" / f"{top}.py").exists()
            if local:
                out.append((node.module, [a.name for a in node.names], node.lineno))
    return out


def test_package_names_stay_the_functions_whatever_was_imported_first():
    import subprocess
    import sys

    code = ("import seglab.train, seglab.evaluate, seglab.predict\n"
            "from seglab import evaluate, predict, train\n"
            "import seglab\n"
            "print(all(callable(f) and f.__name__ == n for f, n in ((train, 'train'), (evaluate, 'evaluate'), "
            "(predict, 'predict'), (seglab.evaluate, 'evaluate'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
