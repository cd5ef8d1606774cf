"""The package's import graph: layered, with no cycle (imports inside functions included)."""

import ast
from pathlib import Path

import startrack

PACKAGE = Path(startrack.__file__).parent


def _modules():
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("startrack",) + path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name, path, mods):
    """(target module, imported name or None, line) of every import in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in mods:
                    out.append((full, None, node.lineno))
                elif target in mods:
                    out.append((target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name in mods]
    return out


def _graph():
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        edges = set()
        for target, _, _ in _imports(name, path, mods):
            # importing a package runs its __init__: an edge to each enclosing package too
            parts = target.split(".")
            edges.update(".".join(parts[:k]) for k in range(2, len(parts) + 1))
        # a submodule's parent packages are imported before it, but that is not this module's doing
        graph[name] = {t for t in edges if t != name and not name.startswith(t + ".")}
    return graph


def _find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
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


def test_import_graph_has_no_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    graph = _graph()
    graph["startrack.psf"] = graph["startrack.psf"] | {"startrack.epsf"}  # what parse_psf's lazy import once did
    assert _find_cycle(graph) is not None


def test_no_private_name_is_imported_across_modules():
    mods = _modules()
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}.{item}"
           for name, path in mods.items() for target, item, line in _imports(name, path, mods)
           if item is not None and item.startswith("_") and not item.startswith("__")]
    assert not bad, "\n".join(bad)


def test_core_imports_no_front_end():
    front = ("startrack.sky", "startrack.microscope", "startrack.calibration", "startrack.cli")
    graph = _graph()
    bad = [f"{m} -> {t}" for m, targets in graph.items()
           if m not in ("startrack", "startrack.__main__") and not m.startswith(front)
           for t in targets if t.startswith(front)]
    assert not bad, "\n".join(bad)
    micro = [f"{m} -> {t}" for m, targets in graph.items() if m.startswith("startrack.microscope")
             for t in targets if t.startswith(("startrack.sky", "startrack.calibration", "startrack.cli"))]
    assert not micro, "\n".join(micro)


def _readme_rows():
    """The README's map of the code: the package paths of its rows, in order."""
    text = (PACKAGE.parent / "README.md").read_text()
    section = text.split("## Map of the code", 1)[1].split("\n## ", 1)[0]
    return [line.split("`")[1] for line in section.splitlines() if line.startswith("| `startrack/")]


def _row_of(module, rows):
    """Index of the README row that holds ``module`` (its file, or the deepest folder it lives in)."""
    path = module.replace(".", "/")
    best = None
    for i, row in enumerate(rows):
        if row == f"{path}.py" or (row.endswith("/") and (path + "/").startswith(row)):
            if best is None or len(row) > len(rows[best]):
                best = i
    return best


def test_readme_map_lists_the_tree_in_layer_order():
    rows = _readme_rows()
    missing = [row for row in rows if not (PACKAGE.parent / row).exists()]
    assert not missing, f"README's map lists paths that do not exist: {missing}"
    graph = _graph()
    modules = [m for m in graph if m not in ("startrack", "startrack.__main__")]
    unmapped = [m for m in modules if _row_of(m, rows) is None]
    assert not unmapped, f"modules missing from README's map: {unmapped}"
    # inside one front end (sky/, microscope/, ...) its parts may import each other; across rows only upwards
    upward = [f"{m} -> {t}" for m in modules for t in graph[m] if t in graph and t != "startrack"
              and _row_of(t, rows) > _row_of(m, rows) and m.split(".")[:2] != t.split(".")[:2]]
    assert not upward, "README's map is not in layer order (an import of a row below):\n" + "\n".join(upward)
