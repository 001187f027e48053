"""The import rules of docs/architecture.md, read from every module's AST (nothing imported)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "headjax"
LIBRARY = {"model": {"parallel"}, "parallel": set(), "io": {"model"}, "data": {"model"},
           "heads": {"model", "parallel"}, "eval": {"model", "data", "parallel"},
           "train": {"model", "parallel", "data", "heads", "lora"}}
APPLICATION = {"app"}
LAYERS = set(LIBRARY) | APPLICATION | {"lora", "headjax"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> tuple[set[str], set[str]]:
    """(modules imported at module level, modules imported anywhere) of headjax, resolved to the
    module (`from headjax.heads import plots` -> headjax.heads.plots, `from headjax.heads.report
    import analyze` -> headjax.heads.report)."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, set[str]] = {"top": set(), "all": set()}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
                       for alias in node.names]
        else:
            continue
        targets = {t for t in targets if t == "headjax" or t.startswith("headjax.")}
        found["all"] |= targets
        if id(node) in top_level:
            found["top"] |= targets
    return found["top"], found["all"]


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return ((PACKAGE / relative).with_suffix(".py").is_file()
            or (PACKAGE / relative / "__init__.py").is_file())


@pytest.fixture(scope="module")
def graph() -> dict[str, tuple[set[str], set[str]]]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        modules[name] = _imports(path, name)
    return modules


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "headjax"


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph `edges`, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = 2, stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_reader_sees_imports(graph):
    """The rules below are only as good as the import reader: check it on known imports."""
    top, every = graph["headjax.app.reproduce.runner"]
    assert "headjax.train.patterns" in top
    assert "headjax.app.reproduce.report" in every - top  # imported inside `reproduce`
    assert "headjax.heads.plots" in graph["headjax.heads.report"][0]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_between_modules(graph):
    """Module-level imports, a package's own submodules left out (importing a.b runs a first)."""
    edges = {m: {t for t in top if not m.startswith(t + ".") and t != m}
             for m, (top, _) in graph.items()}
    assert _cycle(edges) is None


def test_no_import_circle_between_layers(graph):
    edges: dict[str, set[str]] = {}
    for module, (_, every) in graph.items():
        edges.setdefault(_layer(module), set()).update(
            _layer(t) for t in every if _layer(t) not in (_layer(module), "headjax"))
    assert _cycle(edges) is None


@pytest.mark.parametrize("layer", sorted(LIBRARY))
def test_library_layers_import_only_what_they_may(graph, layer):
    allowed = LIBRARY[layer] | {layer}
    wrong = {m: sorted(t for t in every if _layer(t) not in allowed)
             for m, (_, every) in graph.items() if _layer(m) == layer}
    assert not {m: t for m, t in wrong.items() if t}, f"{layer}/ may import only {sorted(allowed)}"


def test_train_imports_neither_io_nor_eval_nor_the_application(graph):
    """train/ is the library's training half (step, optimizer, state, checkpoint, loop, trainer,
    pattern store); reading checkpoints from disk, evaluation and run wiring live above it."""
    wrong = {m: sorted(t for t in every if _layer(t) in {"io", "eval"} | APPLICATION)
             for m, (_, every) in graph.items() if _layer(m) == "train"}
    assert not {m: t for m, t in wrong.items() if t}


def test_train_does_not_load_io_or_eval_through_its_imports(graph):
    """What importing train/ runs at module level (imports followed through every package,
    each package's own __init__ included) reaches neither io/ nor eval/ nor the application."""
    def packages(module: str) -> list[str]:
        parts = module.split(".")
        return [".".join(parts[:i]) for i in range(2, len(parts))]

    seen: set[str] = set()
    todo = [m for m in graph if _layer(m) == "train"]
    while todo:
        module = todo.pop()
        if module in seen or module not in graph:
            continue
        seen.add(module)
        todo.extend([*graph[module][0], *packages(module)])
    assert not sorted(m for m in seen if _layer(m) in {"io", "eval"} | APPLICATION)


def test_every_module_is_in_a_known_layer(graph):
    """A new top-level package must take a row in docs/architecture.md (and here)."""
    assert {_layer(m) for m in graph} <= LAYERS


def test_the_application_is_one_package(graph):
    """Run wiring, guided and selected runs, the dry run, the CLI's error handling, the
    reproduction and the benchmarks all live under headjax/app/."""
    for module in ("experiment", "guide", "select", "dry_run", "cli", "reproduce", "bench"):
        assert f"headjax.app.{module}" in graph
    assert not {m for m in graph if m.split(".")[1:2] in (["reproduce"], ["bench"], ["cli"])}


def test_no_library_layer_imports_the_application(graph):
    wrong = {m: sorted(t for t in every if _layer(t) in APPLICATION)
             for m, (_, every) in graph.items() if _layer(m) not in APPLICATION}
    assert not {m: t for m, t in wrong.items() if t}


def test_heads_reads_no_files(graph):
    """heads/ is pure: no file reading (np.load, open, Path.read_*, absl flags) and no error
    worded for a command-line flag (`--name`)."""
    reading = re.compile(r"np\.load\(|\bopen\(|\.read_(text|bytes)\(|\babsl\b")
    flag = re.compile(r"[\"'(]--[a-z]")
    for path in sorted((PACKAGE / "heads").glob("*.py")):
        text = path.read_text()
        assert not reading.search(text), f"{path.name} reads files"
        assert not flag.search(text), f"{path.name} speaks of command-line flags"
