"""The package imports downward only: no module imports one that imports it back (directly or through others), and
no module imports the top-level package at import time (a function may, once everything is loaded: the console
entry points do, to register every variant). Read from the source with `ast`, so nothing is imported to check it."""
import ast, pathlib
import antipasto

PKG = pathlib.Path(antipasto.__file__).parent


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: pathlib.Path) -> tuple[set, set]:
    "(antipasto modules imported at module level, those imported inside functions) by the file at `path`."
    me, tree = _module(path), ast.parse(path.read_text())
    pkg = me.split('.') if path.name == '__init__.py' else me.split('.')[:-1]
    top, inner = set(), set()
    def visit(node, in_def):
        for child in ast.iter_child_nodes(node):
            deeper = in_def or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names = []
            if isinstance(child, ast.ImportFrom):
                base = pkg[:len(pkg) - child.level + 1] if child.level else []
                mod = '.'.join(base + ([child.module] if child.module else []))
                names = [mod] + [f'{mod}.{a.name}' for a in child.names]
            elif isinstance(child, ast.Import): names = [a.name for a in child.names]
            for n in names:
                if n.split('.')[0] == 'antipasto': (inner if deeper else top).add(n)
            visit(child, deeper)
    visit(tree, False)
    return top, inner


FILES = sorted(p for p in PKG.rglob('*.py') if p.name != '_modidx.py')
MODULES = {_module(p) for p in FILES}


def _graph():
    g = {}
    for p in FILES:
        top, _ = _imports(p)
        g[_module(p)] = {n for n in top if n in MODULES and n != _module(p)}
    return g


def cycles(g: dict) -> list:
    "Every cycle a depth-first search meets in the graph `g` (module -> modules it imports)."
    state, found = {}, []
    def dfs(u, path):
        state[u] = 'open'
        for v in sorted(g.get(u, ())):
            if state.get(v) == 'open': found.append(path[path.index(v):] + [v])
            elif v not in state: dfs(v, path + [v])
        state[u] = 'done'
    for m in sorted(g):
        if m not in state: dfs(m, [m])
    return found


def test_cycle_search_finds_cycles():
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == [['a', 'b', 'c', 'a']]
    assert cycles({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) == []


def test_no_import_cycles():
    g = {m: d - {'antipasto'} for m, d in _graph().items() if m != 'antipasto'}
    assert _graph()['antipasto'], "the graph sees the package's own imports"
    found = cycles(g)
    assert not found, f"import cycles: {found}"


def test_no_module_imports_the_package_at_import_time():
    up = sorted(m for m, d in _graph().items() if m != 'antipasto' and 'antipasto' in d)
    assert not up, f"these modules import the top-level package when imported (import it inside a function): {up}"
