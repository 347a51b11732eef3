#!/usr/bin/env python
"""Offline docs preview and README for antipasto, without Quarto.

`nbdev_docs` builds the published site and needs Quarto. This tool runs nbdev's own notebook processors
(show_doc, hidden and exported cells, doc links) into `_proc/`, exactly as `nbdev_docs` does, and renders
the result with nbconvert instead of Quarto. No network is used: math is typeset by a local copy of MathJax 3.

    python tools/docs_preview.py             # nbs/sidebar.yml, _proc/, then _docs/*.html (open _docs/index.html)
    python tools/docs_preview.py --readme    # README.md from nbs/index.ipynb, as nbdev_readme writes it
    python tools/docs_preview.py --sidebar   # only regenerate nbs/sidebar.yml

`nbs/sidebar.yml` is regenerated on every run from the notebooks present, grouped into sections by the number
that starts each notebook's name (SECTIONS below), so new notebooks appear without editing anything.
"""
import argparse, html, importlib.util, os, re, shutil, sys, time, urllib.parse, warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# Sidebar sections: (title, ranges of the two-digit notebook prefix). Unnumbered notebooks go under OTHER.
SECTIONS = (('Runtime', (range(0, 10), range(90, 100))),
            ('Variants: LoRA', (range(10, 20),)),
            ('AntiPaSTO family', (range(20, 30),)),
            ('Baselines', (range(30, 40),)),
            ('Tools', (range(40, 50),)))
OTHER = 'More'
MATHJAX_FILE = 'tex-svg-full.js'  # MathJax 3, SVG output, every TeX extension built in: one self-contained script
MATHJAX_PKG = 'django-static-mathjax'  # ships MathJax 3 as files in the `mathjax` module; it depends on nothing

def _cfg():
    os.chdir(ROOT)  # nbdev finds settings.ini from the working directory
    from nbdev.config import get_config
    return get_config()

# ---------------------------------------------------------------------------------------------- sidebar
def _num(rel):
    m = re.match(r'(\d+)', rel.name)
    return int(m.group(1)) if m else None

def notebooks(cfg):
    "`[(section, relpath)]` of every notebook in nbs/ in sidebar order; index first, with section None."
    from nbdev.doclinks import nbglob
    nbs = cfg.nbs_path
    rels = sorted(Path(p).relative_to(nbs) for p in nbglob(nbs, file_glob='*.ipynb'))
    out = [(None, r) for r in rels if r.name == 'index.ipynb' and len(r.parts) == 1]
    for title, ranges in SECTIONS:
        out += [(title, r) for r in sorted(rels, key=lambda r: (_num(r) or 0, str(r)))
                if _num(r) is not None and any(_num(r) in rg for rg in ranges)]
    listed = {r for _, r in out}
    out += [(OTHER, r) for r in rels if r not in listed]
    return out

def sidebar_yaml(cfg, nbs_list=None):
    "The Quarto sidebar for the notebooks in nbs/: one section per SECTIONS entry that has notebooks."
    from nbdev.quarto import IndentDumper
    contents = []
    for sec, rel in nbs_list or notebooks(cfg):
        if sec is None: contents.append(str(rel)); continue
        if not contents or not isinstance(contents[-1], dict) or contents[-1]['section'] != sec:
            contents.append({'section': sec, 'contents': []})
        contents[-1]['contents'].append(str(rel))
    return yaml.dump({'website': {'sidebar': {'contents': contents}}}, Dumper=IndentDumper, sort_keys=False)

def write_sidebar(cfg, nbs_list=None):
    "Write nbs/sidebar.yml; True if it changed."
    yml = sidebar_yaml(cfg, nbs_list)
    p = cfg.nbs_path/'sidebar.yml'
    if p.exists() and p.read_text() == yml: return False
    p.write_text(yml)
    return True

# ---------------------------------------------------------------------------------------------- nbdev processing
def _proc_one(job):
    """Run nbdev's docs processors on one notebook (in a worker process).
    Returns (error or None, first lines of the cells nbdev ran because they mix imports with other code)."""
    import nbdev.serve_drv
    src, dst, _ = job
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try: nbdev.serve_drv.main(job); err = None
        except BaseException as e:
            dst.unlink(missing_ok=True)
            err = f'{type(e).__name__}: {e}'
            if e.__cause__ is not None: err += f'\n  caused by {type(e.__cause__).__name__}: {e.__cause__}'
    mixed = [str(w.message).split('---\n')[1].split('\n')[0] for w in caught
             if 'imports and other code' in str(w.message) and '---\n' in str(w.message)]
    return err, mixed

def process(cfg, only=None, force=False, n_workers=2):
    """What `nbdev_proc_nbs` does minus its Quarto install attempt: refresh nbs/nbdev.yml, rebuild the doc-link
    index, run nbdev's processors on every notebook newer than its copy in _proc/. Returns {notebook: error}."""
    from nbdev.quarto import refresh_quarto_yml
    from nbdev.doclinks import _build_modidx, nbglob
    from nbdev.processors import FilterDefaults
    import nbdev.serve
    refresh_quarto_yml()
    _build_modidx()
    nbs, cache = cfg.nbs_path, cfg.config_path/'_proc'
    # Cache validity is judged per file (source newer than its processed copy), not by the folder's mtime as
    # proc_nbs does, so processing only index.ipynb for the README never marks other stale notebooks fresh.
    stamp = cache/'.docs_preview'
    newest_dep = max(cfg.config_file.stat().st_mtime, Path(nbdev.serve.__file__).stat().st_mtime)
    if force or (cache.exists() and (not stamp.exists() or stamp.stat().st_mtime < newest_dep)):
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    files = [Path(p) for p in nbglob(nbs, file_glob='', file_re='')]
    files += [nbs/n for n in ('_quarto.yml', '_brand.yml') if (nbs/n).exists()]
    jobs = []
    for s in files:
        rel = s.relative_to(nbs)
        if only is not None and s.suffix == '.ipynb' and rel not in only: continue
        d = cache/rel
        if d.exists() and s.stat().st_mtime <= d.stat().st_mtime: continue
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.suffix == '.ipynb': jobs.append((s, d, FilterDefaults))
        else: shutil.copy2(s, d)
    if not jobs: return {}
    print(f'processing {len(jobs)} notebook(s) with nbdev: ' + ', '.join(j[0].name for j in jobs), flush=True)
    n = max(1, min(n_workers, len(jobs)))
    # One fresh process per notebook: executing a notebook's cells replaces __main__ and registers its classes,
    # neither of which may leak into the next notebook.
    with ProcessPoolExecutor(n, mp_context=get_context('spawn'), max_tasks_per_child=1) as ex:
        res = dict(zip((j[0].relative_to(nbs) for j in jobs), ex.map(_proc_one, jobs)))
    for rel, (err, mixed) in res.items():
        if mixed: print(f'note: {rel}: nbdev executes these cells for the docs because they mix imports with other '
                        'code (put imports in a cell of their own): ' + '; '.join(repr(m) for m in mixed))
    return {rel: err for rel, (err, _) in res.items() if err}

# ---------------------------------------------------------------------------------------------- cells
_re_opt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def cell_options(src):
    "Split the Quarto `#| key: value` lines nbdev leaves at the top of a processed code cell from the code."
    lines, opts = src.splitlines(), {}
    i = 0
    while i < len(lines) and (m := _re_opt.match(lines[i])):
        try: opts[m.group(1)] = yaml.safe_load(m.group(2)) if m.group(2) else True
        except yaml.YAMLError: opts[m.group(1)] = m.group(2)
        i += 1
    return opts, '\n'.join(lines[i:]).strip('\n')

def frontmatter(nb):
    "Pop the YAML frontmatter raw cell nbdev puts first (title, description, output-file)."
    from nbdev.frontmatter import _fm2dict
    if nb.cells and nb.cells[0].cell_type == 'raw':
        fm = _fm2dict(nb.cells[0].source)
        if fm: nb.cells.pop(0); return fm
    return {}

def _false(v): return v is False or str(v).lower() == 'false'

def prepare_cells(nb):
    "Apply the Quarto cell options nbdev relies on (echo, output, include, code-fold) the way Quarto would."
    keep = []
    for c in nb.cells:
        if c.cell_type == 'raw': continue  # Quarto drops raw cells without a matching output format
        if c.cell_type == 'code':
            opts, c.source = cell_options(c.source)
            if _false(opts.get('include', True)): continue
            if _false(opts.get('output', True)): c.outputs = []
            if _false(opts.get('echo', True)) or not c.source.strip():
                c.metadata['transient'] = {'remove_source': True}
                if not c.outputs: continue
            if 'code-fold' in opts and not _false(opts['code-fold']):
                c.metadata['docs_fold'] = {'open': opts['code-fold'] == 'show',
                                           'summary': str(opts.get('code-summary', 'Code'))}
        keep.append(c)
    nb.cells = keep
    return nb

# ---------------------------------------------------------------------------------------------- html
TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock %}
{% block html_head_js_mermaidjs %}{% endblock %}
{% block html_head_js_mathjax %}
<script>
window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
        processEscapes: true, tags: 'ams'},
  svg: {fontCache: 'global'},
  options: {skipHtmlTags: ['script', 'noscript', 'style', 'textarea', 'pre', 'code']}
};
</script>
<script id="MathJax-script" defer src="{{ resources.site.mathjax }}"></script>
{% endblock %}
{% block extra_css %}<link rel="stylesheet" href="{{ resources.site.root }}_static/site.css">{% endblock %}
{% block body_header %}
<body class="jp-Notebook site" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<nav class="site-sidebar">{{ resources.site.sidebar }}</nav>
<main class="site-main">
<header class="page-header">
<h1 class="page-title">{{ resources.site.title }}</h1>
{%- if resources.site.description %}<div class="description">{{ resources.site.description }}</div>{% endif %}
</header>
{% endblock body_header %}
{% block input %}
{%- if cell.metadata.docs_fold -%}
<details class="code-fold"{{ ' open' if cell.metadata.docs_fold.open }}><summary>{{ cell.metadata.docs_fold.summary | escape_html }}</summary>
{{ super() }}
</details>
{%- else -%}{{ super() }}{%- endif -%}
{% endblock input %}
{% block body_footer %}
<footer class="page-nav">{{ resources.site.pager }}</footer>
</main>
</body>
{% endblock body_footer %}
"""

SITE_CSS = """
body.site { display: flex; margin: 0; padding: 0; background: #fff;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.site-sidebar { position: sticky; top: 0; align-self: flex-start; height: 100vh; overflow-y: auto; box-sizing: border-box;
  width: 270px; flex: 0 0 270px; padding: 1.2rem 1rem; border-right: 1px solid #dee2e6; background: #f8f9fa;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; font-size: 14px; }
.site-sidebar .site-title { display: block; font-size: 1.3rem; font-weight: 600; color: #2780e3; text-decoration: none; margin-bottom: 1rem; }
.site-sidebar .section { margin: 1rem 0 .3rem; font-weight: 600; color: #343a40; }
.site-sidebar ul { list-style: none; margin: 0; padding: 0 0 0 .6rem; }
.site-sidebar li a { display: block; padding: .15rem 0; color: #495057; text-decoration: none; }
.site-sidebar li a:hover { color: #2780e3; }
.site-sidebar li a.active { color: #2780e3; font-weight: 600; }
.site-sidebar li.failed a { color: #c0392b; }
.site-main { flex: 1 1 auto; min-width: 0; max-width: 1000px; padding: 1.5rem 2.5rem 4rem; }
.page-header { margin-bottom: 1.5rem; }
.page-title { font-size: 2.2rem; margin: .5rem 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.page-header .description { font-size: 1.25rem; font-style: italic; opacity: .75; }
.page-header .description p { margin: 0; }
.jp-Cell { padding: 0; margin-bottom: .6rem; }
.jp-MarkdownOutput h3 { margin-top: 1.5rem; }
.jp-RenderedMarkdown.jp-OutputArea-output hr { margin: 1.5rem 0 .5rem; }
.jp-RenderedMarkdown.jp-OutputArea-output pre { background: #f8f9fa; padding: .5rem .8rem; border-radius: 4px; }
.jp-OutputArea-output pre, .jp-RenderedText pre { border-left: 2px solid lightsalmon; padding-left: .8rem; }
.jp-RenderedMarkdown.jp-OutputArea-output pre { border-left: none; }
details.code-fold > summary { cursor: pointer; color: #6c757d; font-size: .9rem; margin: .3rem 0; }
.page-nav { display: flex; justify-content: space-between; margin-top: 3rem; padding-top: 1rem; border-top: 1px solid #dee2e6; }
.page-nav a { color: #2780e3; text-decoration: none; }
.docs-error { border-left: 4px solid #c0392b; background: #fdecea; padding: .6rem 1rem; margin-bottom: .8rem; }
mjx-container[display="true"] { overflow-x: auto; overflow-y: hidden; }
"""

def find_mathjax():
    "Path of the local MathJax 3 script, from the django-static-mathjax package."
    spec = importlib.util.find_spec('mathjax')
    if spec and spec.origin:
        p = Path(spec.origin).parent/'static'/'mathjax'/'es5'/MATHJAX_FILE
        if p.exists(): return p
    return None

def _slug(s):
    "Pandoc/Quarto heading identifier, which nbdev's doc links point at (lowercase, hyphens for spaces)."
    s = re.sub(r'[^\w\s.-]', '', html.unescape(urllib.parse.unquote(s)).lower()).strip()
    return re.sub(r'^[^a-z]+', '', re.sub(r'\s+', '-', s)) or 'section'

def _inline_md(s):
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    out = markdown2html_mistune(str(s)).strip()
    return out[3:-4] if out.startswith('<p>') and out.endswith('</p>') and out.count('<p>') == 1 else out

def _postprocess(body, prefix, site_url, links):
    "Quarto-style heading ids; doc links to the published site and .ipynb links made relative."
    body = re.sub(r'<h([1-6]) id="([^"]*)"', lambda m: f'<h{m.group(1)} id="{_slug(m.group(2))}"', body)
    body = re.sub(r'class="anchor-link" href="#([^"]*)"', lambda m: f'class="anchor-link" href="#{_slug(m.group(1))}"', body)
    if site_url: body = body.replace(f'href="{site_url}/', f'href="{prefix}')
    def _nb(m):
        target, frag = m.group(1), m.group(2) or ''
        name = links.get(Path(target).name)
        return f'href="{prefix}{name}{frag}"' if name else m.group(0)
    return re.sub(r'href="(?![a-z]+:)([^"#]*\.ipynb)(#[^"]*)?"', _nb, body)

def _source_title(path):
    "Title and description from the first markdown cell of an unprocessed notebook, as nbdev reads them."
    import nbformat
    from nbdev.frontmatter import _md2dict
    try: nb = nbformat.read(path, as_version=4)
    except Exception: return {}
    return next((d for c in nb.cells if c.cell_type == 'markdown' and (d := _md2dict(c.source))), {})

def _sidebar_html(pages, cur, prefix, title):
    home = ' active' if cur['out'] == 'index.html' else ''
    out = [f'<a class="site-title{home}" href="{prefix}index.html">{html.escape(title)}</a>', '<ul>']
    sec = None
    for p in pages:
        if p['out'] == 'index.html': continue  # the site title links to it
        if p['section'] is not None and p['section'] != sec:
            sec = p['section']
            out.append(f'</ul><div class="section">{html.escape(sec)}</div><ul>')
        cls = ' class="active"' if p is cur else ''
        li = ' class="failed"' if p.get('error') else ''
        out.append(f'<li{li}><a{cls} href="{prefix}{p["out"]}">{p["title_html"]}</a></li>')
    return '\n'.join(out + ['</ul>'])

def render(cfg, nbs_list, errors=None, mathjax_url=None):
    "Render every processed notebook in _proc/ to _docs/ (cleared first). Returns the page records."
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from nbdev.doclinks import _nbpath2html
    errors = errors or {}
    cache, out = cfg.config_path/'_proc', cfg.config_path/cfg.doc_path.name
    shutil.rmtree(out, ignore_errors=True)
    (out/'_static').mkdir(parents=True)
    (out/'_static'/'site.css').write_text(SITE_CSS)
    if mathjax_url is None:
        mj = find_mathjax()
        if mj is None:
            sys.exit(f'MathJax not found: `pip install {MATHJAX_PKG}` (a dev requirement), or pass --mathjax-url')
        (out/'_static'/'mathjax').mkdir()
        shutil.copy2(mj, out/'_static'/'mathjax'/MATHJAX_FILE)
    pages = []
    for sec, rel in nbs_list:
        p = dict(section=sec, rel=rel, src=cache/rel, error=errors.get(rel), missing=False)
        missing = p['error'] is None and not p['src'].exists()
        if missing: p['error'] = 'not in _proc/ yet: run `python tools/docs_preview.py` (without --no-proc)'
        p['missing'] = missing
        nb = nbformat.read(p['src'], as_version=4) if p['error'] is None else None
        fm = frontmatter(nb) if nb is not None else {}
        p.update(nb=nb, fm=fm, out=str(rel.parent/fm['output-file']) if 'output-file' in fm
                 else str(_nbpath2html(rel)).replace(os.sep, '/'))
        if nb is None: fm = _source_title(cfg.nbs_path/rel)
        p['title_html'] = _inline_md(fm.get('title', rel.stem))
        pages.append(p)
    if not any(p['out'] == 'index.html' for p in pages):  # no index notebook: a contents page stands in
        pages.insert(0, dict(section=None, rel=Path('index'), nb=nbformat.v4.new_notebook(), error=None,
                             fm={'title': cfg.title, 'description': cfg.get('description', '')},
                             out='index.html', title_html=html.escape(cfg.title), contents=True))
    links = {p['rel'].name: p['out'] for p in pages}
    site_url = (cfg.get('doc_host', '') + cfg.get('doc_baseurl', '')).rstrip('/')
    exporter = HTMLExporter(template_name='lab', extra_loaders=[DictLoader({'antipasto_docs.html.j2': TEMPLATE})],
                            template_file='antipasto_docs.html.j2', exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    for i, p in enumerate(pages):
        depth = len(Path(p['out']).parts) - 1
        prefix = '../' * depth
        nb = p['nb']
        if p['error'] is not None:
            fence = '````' if '```' in p['error'] else '```'
            why = ('was not processed' if p['missing'] else
                   'could not be processed by nbdev (<code>nbdev_docs</code> fails on it the same way)')
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
                f'<div class="docs-error"><code>{html.escape(str(p["rel"]))}</code> {why}.</div>'
                f'\n\n{fence}text\n{p["error"]}\n{fence}')])
        else: prepare_cells(nb)
        if p.get('contents'):
            nb.cells = [nbformat.v4.new_markdown_cell('\n'.join(f'- [{q["title_html"]}]({q["out"]})' for q in pages[1:]))]
        nb.metadata['title'] = re.sub(r'<[^>]+>', '', p['title_html'])
        pager = [f'<a href="{prefix}{pages[i-1]["out"]}">&larr; {pages[i-1]["title_html"]}</a>' if i else '<span></span>',
                 f'<a href="{prefix}{pages[i+1]["out"]}">{pages[i+1]["title_html"]} &rarr;</a>' if i+1 < len(pages) else '']
        site = dict(root=prefix, title=p['title_html'], pager=''.join(pager),
                    description=_inline_md(p['fm']['description']) if p['fm'].get('description') else '',
                    sidebar=_sidebar_html(pages, p, prefix, cfg.title),
                    mathjax=mathjax_url or f'{prefix}_static/mathjax/{MATHJAX_FILE}')
        body, _ = exporter.from_notebook_node(nb, resources={'site': site, 'metadata': {'name': nb.metadata['title']}})
        dest = out/p['out']
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_postprocess(body, prefix, site_url, links), encoding='utf-8')
    for f in cache.rglob('*'):  # images and other files the notebooks link to
        rel = f.relative_to(cache)
        if f.is_file() and f.suffix not in ('.ipynb', '.yml', '.py', '.css') and not any(s[0] in '._' for s in rel.parts):
            (out/rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out/rel)
    return pages

# ---------------------------------------------------------------------------------------------- README
README_MAX_LINES = 40  # a README shows small outputs; longer ones are cut with a note

def _text(x): return ''.join(x) if isinstance(x, list) else str(x)

def _block(s, lang=''):
    s = s.rstrip('\n')
    fence = '````' if '```' in s else '```'
    return f'{fence}{lang}\n{s}\n{fence}'

def _cut(s):
    lines = s.rstrip('\n').splitlines()
    if len(lines) <= README_MAX_LINES: return s
    return '\n'.join(lines[:README_MAX_LINES] + [f'... ({len(lines) - README_MAX_LINES} more lines)'])

def readme_md(nb, files_dir, site_url='', links=None):
    """Markdown for README.md from a processed notebook: what `quarto render -t gfm` gives for nbdev_readme.
    Links to other notebooks point at their pages on the docs site (`links`: notebook name -> page)."""
    import base64
    fm = frontmatter(nb)
    prepare_cells(nb)
    parts = []
    if fm.get('title'): parts.append(f'# {fm["title"]}')
    if fm.get('description'): parts.append(f'> {fm["description"]}')
    for ci, c in enumerate(nb.cells):
        if c.cell_type == 'markdown':
            src = c.source.strip()
            if site_url and links:
                def _link(m):
                    page = links.get(Path(m.group(1)).name)
                    return f']({site_url}/{page}{m.group(2) or ""})' if page else m.group(0)
                src = re.sub(r'\]\((?![a-z]+:)([^)#\s]*\.ipynb)(#[^)\s]*)?\)', _link, src)
            parts.append(src); continue
        if not c.metadata.get('transient', {}).get('remove_source'): parts.append(_block(c.source, 'python'))
        for oi, o in enumerate(c.get('outputs', [])):
            if o.output_type == 'stream':
                if o.name == 'stdout': parts.append(_block(_cut(_text(o.text))))
                continue  # stderr (warnings) stays out of a README
            if o.output_type == 'error':
                parts.append(_block(f'{o.ename}: {o.evalue}')); continue
            data = o.get('data', {})
            if 'text/markdown' in data: parts.append(_text(data['text/markdown']).strip())
            elif 'image/png' in data:
                files_dir.mkdir(parents=True, exist_ok=True)
                name = f'cell-{ci}-output-{oi}.png'
                (files_dir/name).write_bytes(base64.b64decode(_text(data['image/png'])))
                parts.append(f'![]({files_dir.parent.name}/{files_dir.name}/{name})')
            elif 'text/html' in data: parts.append(_text(data['text/html']).strip())
            elif 'text/plain' in data: parts.append(_block(_cut(_text(data['text/plain']))))
    return '\n\n'.join(p for p in parts if p) + '\n'

def write_readme(cfg, n_workers=2):
    import nbformat
    rel = Path(cfg.get('readme_nb', 'index.ipynb'))
    errs = process(cfg, only={rel}, n_workers=n_workers)
    if errs: sys.exit(f'nbdev could not process {rel}:\n{errs[rel]}')
    nb = nbformat.read(cfg.config_path/'_proc'/rel, as_version=4)
    files = cfg.config_path/f'{rel.stem}_files'
    shutil.rmtree(files/'figure-gfm', ignore_errors=True)
    dest = cfg.config_path/'README.md'
    from nbdev.doclinks import _nbpath2html
    links = {r.name: str(_nbpath2html(r)).replace(os.sep, '/') for _, r in notebooks(cfg)}
    site_url = (cfg.get('doc_host', '') + cfg.get('doc_baseurl', '')).rstrip('/')
    dest.write_text(readme_md(nb, files/'figure-gfm', site_url, links), encoding='utf-8')
    print(f'wrote {dest.relative_to(cfg.config_path)}')

# ---------------------------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--readme', action='store_true', help='write README.md from nbs/index.ipynb and stop')
    ap.add_argument('--sidebar', action='store_true', help='write nbs/sidebar.yml and stop')
    ap.add_argument('--check', action='store_true', help='exit 1 if nbs/sidebar.yml is not up to date (for CI)')
    ap.add_argument('--force', action='store_true', help='reprocess every notebook (ignore _proc/)')
    ap.add_argument('--no-proc', action='store_true', help='render what is in _proc/ without running nbdev')
    ap.add_argument('--workers', type=int, default=min(2, os.cpu_count() or 1), help='processes for nbdev')
    ap.add_argument('--mathjax-url', default=None, help='load MathJax from this URL instead of a local copy')
    a = ap.parse_args(argv)
    cfg = _cfg()
    if a.readme: return write_readme(cfg, a.workers)
    nbs_list = notebooks(cfg)
    if a.check:
        p = cfg.nbs_path/'sidebar.yml'
        if p.exists() and p.read_text() == sidebar_yaml(cfg, nbs_list): return 0
        print('nbs/sidebar.yml is out of date: run `python tools/docs_preview.py --sidebar`', file=sys.stderr)
        return 1
    if write_sidebar(cfg, nbs_list): print('updated nbs/sidebar.yml')
    if a.sidebar: return
    t = time.time()
    only = {rel for _, rel in nbs_list}
    errs = {} if a.no_proc else process(cfg, only=only, force=a.force, n_workers=a.workers)
    pages = render(cfg, nbs_list, errs, a.mathjax_url)
    out = cfg.config_path/cfg.doc_path.name
    print(f'rendered {len(pages)} page(s) to {out.relative_to(cfg.config_path)}/ in {time.time() - t:.0f}s: '
          f'open {out/"index.html"}')
    for rel, e in errs.items(): print(f'\nFAILED {rel}:\n{e}', file=sys.stderr)
    return 1 if errs else 0

if __name__ == '__main__': sys.exit(main())
