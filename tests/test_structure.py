"""The package's shape (issue 18): a few wings at the top, and no import cycle among its modules, counting every
import in a module (function-level and TYPE_CHECKING-only ones too: they are cycles that only wait for a caller).
The graph is read from the source with `ast`, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "scalequest_dataset"
MAX_TOP = 10


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports. `from P import n` is an edge to P.n when that is a module,
    else to P; `import a.b` is an edge to a.b (importing a submodule does not count its parents' __init__: a package
    that re-exports its parts would otherwise always be a cycle)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in files)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target not in files:
                    continue
                for alias in node.names:
                    edges.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in files else target)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def top_level(root: Path = PACKAGE) -> list[str]:
    """The modules and subpackages at the top of the package (what a newcomer sees first)."""
    return sorted(p.name for p in root.iterdir()
                  if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").is_file()))


def test_no_import_cycle_among_the_package_modules():
    graph = import_graph()
    assert len(graph) > 50 and "scalequest_dataset.run.plan" in graph["scalequest_dataset.run.runner"]
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(", ".join(c) for c in found)


def test_at_most_ten_entries_at_the_top_of_the_package():
    entries = top_level()
    assert len(entries) <= MAX_TOP, entries


def test_the_checks_see_a_cycle_hidden_in_a_function_or_behind_type_checking(tmp_path):
    """The checker itself: a cycle made only by a function-level import, or a TYPE_CHECKING one, is found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import thing\n")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n    return b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n"
                                      "thing = 1\n")
    (pkg / "c.py").write_text("import os\nfrom . import a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("thing = 1\n")
    assert cycles(import_graph(pkg)) == []
    assert top_level(pkg) == ["__init__.py", "a.py", "c.py", "sub"]


def test_no_two_classes_share_a_name():
    """Two classes of one name read as one thing (there were two `ShardResult`s). A stage's `Params` is the one
    exception: each is read as `<Stage>.Params`, never imported by name."""
    where: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, []).append(module_name(path))
    shared = {name: mods for name, mods in where.items() if len(mods) > 1 and name != "Params"}
    assert not shared, shared


def test_each_stage_lives_in_a_file_of_its_name_in_a_class_of_its_name():
    """`stages/default.py` holds the stage `default` in `DefaultStage` (it was `SelectStage` in `select.py`)."""
    found = {}
    for path in sorted((PACKAGE / "stages").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", "") == "Stage" for b in node.bases):
                names = [s.value.value for s in node.body if isinstance(s, ast.Assign)
                         and [getattr(t, "id", "") for t in s.targets] == ["name"]]
                found[path.stem] = (node.name, names)
    assert len(found) >= 9, found
    for stem, (cls, names) in found.items():
        assert names == [stem] and cls == stem.title().replace("_", "") + "Stage", (stem, cls, names)


def test_no_module_outside_the_stages_branches_on_a_stage_or_its_columns():
    """A stage owns what is said about it (card notes and sections, figures, diff statistics): no comparison with a
    stage's name or a column a stage declares (`x == "difficulty"`, `"decontamination" in manifests`) outside
    stages/. The columns every stage writes (`id`, `drop_reason`) are not a stage's."""
    from scalequest_dataset.stages import REGISTRY
    from scalequest_dataset.stages.base import Stage

    watched = {s.name for s in REGISTRY}
    for stage in REGISTRY:
        watched |= (set(stage.statistics) | {f.column for f in stage.figures}) - set(Stage.statistics)
    assert {"default", "difficulty", "generator", "query"} <= watched
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "stages":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                    found += [f"{module_name(path)}:{node.lineno}: {item.value!r}" for item in items
                              if isinstance(item, ast.Constant) and item.value in watched]
    assert not found, found
