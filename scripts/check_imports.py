#!/usr/bin/env python3
"""Check that diluvian's modules import each other one way only (the layer order of docs/DESIGN.md).

Reads every ``.py`` file of the package with :mod:`ast` (imports inside functions and
``if TYPE_CHECKING:`` blocks count too), lists each module's package-internal imports with the
layer of both ends, and exits 1 when a module imports one of a higher layer (an upward import),
when modules import each other in a circle, or when a module is in no layer. Exit 0 otherwise.

    python scripts/check_imports.py              # the listing, then the problems
    python scripts/check_imports.py -q           # only the problems and a summary line (make test)
    python scripts/check_imports.py --layers     # the layer order, top first
    python scripts/check_imports.py --package path/to/pkg --layers-from my_layers.py

The layer order is the data below: edit ``LAYERS`` when a module moves or appears.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# Lowest layer first. Each entry is a module-name prefix relative to the package: "volumes"
# covers diluvian.volumes and every diluvian.volumes.* module, unless a longer prefix (such as
# "volumes.base") is listed in another layer. A module may import modules of its own layer or of
# lower layers, never of higher ones; within a layer, the circle check keeps imports one way.
# "__init__" is the package's own __init__.py (the public API, which imports everything).
LAYERS: list[list[str]] = [
    ["errors"],
    ["util", "geometry"],
    ["arrays", "octree", "config", "device"],
    ["volumes", "synthetic", "augment", "metrics", "postprocessing", "claim", "seeds", "masks", "baselines"],
    ["network", "model", "predict", "region", "flood", "batchops", "stepper", "outputs"],
    ["training", "fill", "sample_fill"],
    ["evaluate"],
    ["selection"],
    ["view"],
    ["cli", "__main__", "__init__"],
]


@dataclass(frozen=True)
class Import:
    """One package-internal import: ``source`` imports ``target`` (dotted names) at ``line``."""

    source: str
    target: str
    line: int


def module_names(package_dir: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file under ``package_dir`` (a package's __init__ is the package)."""
    root = package_dir.name
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([root, *parts])] = Path(os.path.relpath(path))
    return modules


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name ``from <node.module>`` refers to inside ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def find_imports(modules: dict[str, Path]) -> list[Import]:
    """Every import, anywhere in each module, of another module of the same package."""
    root = next(iter(modules)).split(".")[0]
    found = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node)
                # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in dict.fromkeys(targets):
                # `import diluvian.volumes.base` names a module; keep the longest known prefix
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target.split(".")[0] == root and target != module:
                    found.append(Import(module, target, node.lineno))
    return found


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    """Index in ``layers`` of the longest prefix matching ``module`` (dotted, with the package name), or None."""
    parts = module.split(".")[1:] or ["__init__"]
    name = ".".join(parts)
    best, best_len = None, -1
    for index, prefixes in enumerate(layers):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def find_circles(modules: list[str], imports: list[Import]) -> list[list[str]]:
    """Groups of more than one module that import each other in a circle (strongly connected, Tarjan), sorted."""
    graph: dict[str, list[str]] = {m: [] for m in modules}
    for imp in imports:
        if imp.target not in graph[imp.source]:
            graph[imp.source].append(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for node in graph:
        if node not in index:
            visit(node)
    return [sorted(g) for g in groups]


def _circle_path(group: list[str], graph: dict[str, list[str]]) -> list[str]:
    """One circle through ``group``'s first module: a shortest path back to it inside the group (breadth-first)."""
    start, members = group[0], set(group)
    previous: dict[str, str] = {}
    queue = [start]
    for node in queue:
        for nxt in graph[node]:
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return path[::-1] + [start]
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return group + [start]


def check(package_dir: Path, layers: list[list[str]], *, quiet: bool = False, out=sys.stdout) -> int:
    """Print the listing (unless ``quiet``) and the problems; return the number of problems."""
    modules = module_names(package_dir)
    if not modules:
        print(f"{package_dir}: no Python modules found", file=out)
        return 1
    imports = find_imports(modules)
    layer = {m: layer_of(m, layers) for m in modules}
    problems = []
    for m in modules:
        if layer[m] is None:
            problems.append(f"{m} ({modules[m]}): in no layer; add a prefix for it to LAYERS in {Path(__file__).name}")
    for imp in imports:
        ls, lt = layer[imp.source], layer[imp.target]
        if ls is not None and lt is not None and lt > ls:
            problems.append(f"upward import: {imp.source} (layer {ls}) imports {imp.target} (layer {lt}) "
                            f"at {modules[imp.source]}:{imp.line}")
    graph: dict[str, list[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, []).append(imp.target)
    for group in find_circles(list(modules), imports):
        where = {f"{modules[i.source]}:{i.line}" for i in imports if i.source in group and i.target in group}
        problems.append(f"import circle among {', '.join(group)}: " + " -> ".join(_circle_path(group, graph))
                        + f" (imports at {', '.join(sorted(where))})")

    if not quiet:
        by_source: dict[str, list[Import]] = {}
        for imp in imports:
            by_source.setdefault(imp.source, []).append(imp)
        for m in modules:
            targets = dict.fromkeys(i.target for i in by_source.get(m, []))
            shown = ", ".join(f"{t}{'' if layer[t] is None or layer[m] is None or layer[t] <= layer[m] else ' (UP)'}"
                              for t in targets)
            print(f"{m} [layer {layer[m]}] -> {shown or '(nothing)'}", file=out)
        print(file=out)
    for p in problems:
        print(p, file=out)
    n_layers = sum(1 for names in layers if names)
    if problems:
        print(f"check_imports: {len(problems)} problem(s) in {len(modules)} modules "
              f"(layer order: LAYERS in {Path(__file__).resolve()})", file=out)
    else:
        pairs = len({(i.source, i.target) for i in imports})
        print(f"check_imports: ok, {len(modules)} modules, {pairs} internal imports, "
              f"{n_layers} layers, no upward import, no circle", file=out)
    return len(problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, default=Path(__file__).resolve().parent.parent / "src" / "diluvian",
                        help="the package directory (default: src/diluvian)")
    parser.add_argument("--layers-from", type=Path,
                        help="a Python file defining LAYERS to use instead of the one in this script")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the problems and a summary")
    parser.add_argument("--layers", action="store_true", help="print the layer order, top first, and exit")
    args = parser.parse_args(argv)
    layers = LAYERS
    if args.layers_from is not None:
        scope: dict = {}
        exec(compile(args.layers_from.read_text(), str(args.layers_from), "exec"), scope)
        layers = scope["LAYERS"]
    if args.layers:
        for index in reversed(range(len(layers))):
            print(f"{index}: {', '.join(layers[index])}")
        return 0
    if not args.package.is_dir():
        print(f"{args.package}: not a directory (expected the package's source folder)", file=sys.stderr)
        return 2
    return 1 if check(args.package, layers, quiet=args.quiet) else 0


if __name__ == "__main__":
    sys.exit(main())
