#!/usr/bin/env python3
"""The import graph of a package under src/: cycles between its modules, and modules over a line limit.

    python3 tools/importcycles.py src uem 400

Every import counts, at module level or inside a function. An import of a package's __init__ is not
an edge (importing a name from a package is how its parts are reached). Prints each cycle and each
long module; exit code 1 if there is any. Standard library only.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported(name: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names one import statement may refer to (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    stem = node.module or ""
    if node.level:
        base = name.split(".")
        keep = len(base) - node.level + (1 if path.name == "__init__.py" else 0)
        stem = ".".join(base[:keep] + ([node.module] if node.module else []))
    return [stem] + [f"{stem}.{alias.name}" for alias in node.names]


def graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in imported(m, path, node):
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != m and not m.startswith(target + ".") \
                        and mods[target].name != "__init__.py":
                    edges[m].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    src, package = Path(argv[0]), argv[1]
    max_lines = int(argv[2]) if len(argv) > 2 else 0
    mods = modules(src, package)
    found = cycles(graph(mods))
    long = sorted((n, m) for m, p in mods.items()
                  if max_lines and (n := len(p.read_text(encoding="utf-8").splitlines())) > max_lines)
    for c in found:
        print("cycle: " + " <-> ".join(c))
    for n, m in long:
        print(f"long: {m} {n} lines")
    print(f"{len(found)} cycles, {len(long)} modules over {max_lines} lines")
    return 1 if found or long else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
