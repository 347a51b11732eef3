"""Keep imports in cells of their own: nbdev's docs processing executes every cell that contains an import.

`python tools/nb_lint.py` lists offending cells (exit 1 if any); `--fix` moves each top-level import of a mixed
cell into a new cell just before it.
"""
import ast, json, pathlib, re, sys, uuid

IMPORT = re.compile(r'(import|from)\s+\S')


def _code(line):
    s = line.strip()
    return s and not s.startswith('#')


def mixed(cell):
    "Line numbers of the top-level imports of a code cell that also holds other code (exported cells are left alone)."
    src = ''.join(cell['source']).splitlines()
    if cell['cell_type'] != 'code' or any(l.startswith('#| export') or l.startswith('#|export') for l in src): return []
    try: tree = ast.parse('\n'.join(src))
    except SyntaxError: tree = None   # a magic or shell line: read the lines themselves
    if tree is not None:   # by statement, as nbdev does: an import inside a string is not one
        imps = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if any(n.end_lineno != n.lineno for n in imps): return []  # multi-line import: leave it to a person
        return [n.lineno - 1 for n in imps] if imps and len(imps) != len(tree.body) else []
    code = [i for i, l in enumerate(src) if _code(l)]
    imps = [i for i in code if IMPORT.match(src[i])]
    if any(src[i].rstrip().endswith(('(', '\\', ',')) for i in imps): return []
    return imps if imps and len(imps) != len(code) else []


def fix(nb):
    out = []
    for c in nb['cells']:
        imps = mixed(c)
        if imps:
            src = ''.join(c['source']).splitlines()
            directives = [l for l in src if l.startswith('#|')]
            rest = [l for i, l in enumerate(src) if i not in imps]
            out.append({'cell_type': 'code', 'execution_count': None, 'id': uuid.uuid4().hex[:8], 'metadata': {}, 'outputs': [],
                        'source': '\n'.join(directives + [src[i] for i in imps])})
            c = {**c, 'source': '\n'.join(rest)}
        out.append(c)
    nb['cells'] = out
    return nb


def nested(cell):
    "Whether a non-exported code cell has an import below top level (nbdev runs it for the docs; --fix cannot move it)."
    src = ''.join(cell['source'])
    if cell['cell_type'] != 'code' or re.search(r'^#\|\s*export', src, re.M): return False
    try: tree = ast.parse(src)
    except SyntaxError: return False
    top = {id(n) for n in tree.body}
    return any(isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in top for n in ast.walk(tree))


def main(argv):
    do_fix, bad = '--fix' in argv, 0
    for f in sorted(pathlib.Path(__file__).parents[1].joinpath('nbs').glob('*.ipynb')):
        nb = json.loads(f.read_text())
        deep = [i for i, c in enumerate(nb['cells']) if nested(c)]
        if deep:
            bad += len(deep)
            print(f'{f.name}: cells {deep} import inside a block; move the import to a cell of its own')
        cells = [i for i, c in enumerate(nb['cells']) if mixed(c)]
        if not cells: continue
        if do_fix:
            f.write_text(json.dumps(fix(nb), indent=1, ensure_ascii=False) + '\n')
            print(f'{f.name}: split {len(cells)} cell(s)')
        else:
            bad += len(cells)
            print(f'{f.name}: cells {cells} mix imports with other code (run tools/nb_lint.py --fix)')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
