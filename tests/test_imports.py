"""Module dependencies go one way: no import cycles inside the package."""
import ast
import os

import hearthlm

PACKAGE = os.path.dirname(hearthlm.__file__)


def imports_of(path: str) -> set:
    """hearthlm modules imported anywhere in a module (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_no_import_cycles():
    graph = {f[:-3]: imports_of(os.path.join(PACKAGE, f)) for f in os.listdir(PACKAGE) if f.endswith(".py")}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items() if m != "__init__"}

    def reaches(start, goal, seen):
        return any(d == goal or (d not in seen and not seen.add(d) and reaches(d, goal, seen))
                   for d in graph.get(start, ()))

    cycles = sorted(f"{m} -> {d} -> ... -> {m}" for m, deps in graph.items() for d in deps
                    if reaches(d, m, set()))
    assert not cycles, cycles
