"""Build the HTML book with Jupyter Book 1.x from the nbdev notebooks.

1. Copy the notebooks named in nbs/_toc.yml to a build folder, turning nbdev directives into
   Jupyter Book tags (nbdev_directives.py) so that no directive shows and hidden cells stay hidden.
2. Run `jupyter-book build` on the copy. It executes every notebook, so figures are computed now.
   A cell that raises or any Sphinx warning fails the build.
3. Print the path of index.html.
"""
import argparse
import configparser
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from nbdev_directives import README_ONLY, fig_alt, split_directives, tags_for

NBS = Path(__file__).resolve().parents[1]
ROOT = NBS.parent
BOOK_FILES = ['_config.yml', '_toc.yml', 'references.bib']
# nbdev's show_doc opens with a horizontal rule and a heading, which Sphinx rejects inside a cell's
# output. In the book, a hidden first cell gives it a renderer without them, whose signature lines fit the column.
SHOW_DOC_FOR_SPHINX = """\
import nbdev.showdoc
class _SphinxRenderer(nbdev.showdoc.MarkdownRenderer):
    def __init__(self, sym, name=None, title_level=3, maxline=76):  # signature lines fit the column
        super().__init__(sym, name=name, title_level=title_level, maxline=maxline)
    def _repr_markdown_(self): return f'**`{self.nm}`**\\n\\n' + super()._repr_markdown_()
nbdev.showdoc.BasicMarkdownRenderer = _SphinxRenderer"""
BIBLIOGRAPHY_PAGE = '# References\n\n```{bibliography}\n:all:\n```\n'
# LaTeX commands of the captions, as the characters an alt text can carry
SYMBOLS = dict(zip(
    'alpha beta gamma delta Delta varepsilon epsilon eta theta kappa lambda mu nu rho sigma Sigma tau varphi phi psi '
    'omega ell infty sqrt approx leq geq le ge cdot times to sim propto nabla ldots dots pm top'.split(),
    'α β γ δ Δ ε ε η θ κ λ μ ν ρ σ Σ τ φ φ ψ ω ℓ ∞ √ ≈ ≤ ≥ ≤ ≥ · × → ~ ∝ ∇ … … ± ᵀ'.split()))


def plain_math(tex):
    "Inline LaTeX as plain characters: θ_t, x^2, N(0.5, 1)."
    tex = re.sub(r'\\(?:mathcal|mathrm|mathbf|mathbb|operatorname|text|hat|bar|tilde|boldsymbol)\s*\{([^{}]*)\}', r'\1', tex)
    tex = re.sub(r'\\([A-Za-z]+)', lambda m: SYMBOLS.get(m.group(1), ''), tex)
    return re.sub(r'\\[,;:! ]', ' ', tex).replace('{', '').replace('}', '')


def plain_text(markdown):
    "A caption's Markdown and LaTeX as plain text, for an image's alt attribute."
    text = re.sub(r'\{glue:[a-z]+\}`[^`]*`', '…', markdown)
    text = re.sub(r'\s*\{cite[a-z:]*\}`[^`]*`', '', text)
    text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', text)                       # [text](link)
    text = re.sub(r'\$([^$]+)\$', lambda m: plain_math(m.group(1)), text)
    return re.sub(r'\s+', ' ', re.sub(r'[*`]', '', text)).strip()


def caption_alt(cells, i):
    "The caption after code cell i (the next Markdown cell, unless a heading), up to its first glued number."
    for cell in cells[i + 1:]:
        source = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
        if cell['cell_type'] == 'code':
            if 'remove-cell' in cell.get('metadata', {}).get('tags', []): continue
            return None
        if source.lstrip().startswith('#'): return None
        sentences, alt = re.split(r'(?<=[.!?])\*?\s+(?=[A-Z(*])', source.strip().split('\n\n')[0]), ''
        for k, sentence in enumerate(sentences):
            if k and ('{glue' in sentence or len(alt) >= 60): break
            alt += ' ' + sentence
        return plain_text(alt) or None
    return None


def convert(nb_path, out_path, skip_flags):
    "Write a copy of the notebook whose code cells carry Jupyter Book tags instead of nbdev directives (README-only cells are removed)."
    nb = json.loads(nb_path.read_text(encoding='utf-8'))
    alts = {}
    for i, cell in enumerate(nb['cells']):
        source = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
        if cell['cell_type'] == 'markdown' and source.startswith(README_ONLY):
            cell.setdefault('metadata', {})['tags'] = ['remove-cell']
        if cell['cell_type'] != 'code': continue
        alts[i] = fig_alt(source)
        directives, cell['source'] = split_directives(source)
        if tags := tags_for(directives, skip_flags):
            cell.setdefault('metadata', {})['tags'] = tags
    # A figure's alt text says what it shows: the cell's `#| fig-alt:`, else the first sentence of its caption.
    for i, alt in alts.items():
        if alt := alt or caption_alt(nb['cells'], i):
            nb['cells'][i].setdefault('metadata', {}).setdefault('mystnb', {}).setdefault('image', {})['alt'] = alt
    if any('show_doc(' in ''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code'):
        # after the install cell, so that a notebook downloaded from the book installs nbdev before this runs
        first = 1 if nb['cells'] and nb['cells'][0].get('id') == 'install-if-missing' else 0
        nb['cells'].insert(first, {'cell_type': 'code', 'execution_count': None, 'id': 'sphinx-show-doc',
                               'metadata': {'tags': ['remove-cell']}, 'outputs': [], 'source': SHOW_DOC_FOR_SPHINX})
    out_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding='utf-8')


def bundle_assets(src, draft=False, keep_errors=False):
    "Ship MathJax (from the django-static-mathjax dev dependency), plotly.js (from plotly) and the book's CSS: no CDN."
    import mathjax
    es5 = Path(mathjax.__file__).parent / 'static' / 'mathjax' / 'es5'
    unused = shutil.ignore_patterns('tex-svg*', 'tex-chtml*', 'mml-*', 'tex-mml-svg.js', 'node-main.js')
    # Not in src/_static: Jupyter Book would add a <script> tag for every .js file there.
    shutil.copytree(es5, src / '_assets' / 'mathjax', ignore=unused)
    # plotly's own bundle, for the interactive figures (modern_updates.plotting.slider_figure loads it from _static)
    import plotly
    shutil.copy(Path(plotly.__file__).parent / 'package_data' / 'plotly.min.js', src / '_assets' / 'plotly.min.js')
    css = [path.name for path in sorted((NBS / '_static').glob('*.css'))]
    for name in css: shutil.copy(NBS / '_static' / name, src / '_assets' / name)
    config_path = src / '_config.yml'
    config = yaml.safe_load(config_path.read_text(encoding='utf-8'))
    sphinx_config = config.setdefault('sphinx', {}).setdefault('config', {})
    sphinx_config.update(mathjax_path='mathjax/tex-mml-chtml.js', html_static_path=['_assets'], html_css_files=css)
    # A draft leaves most chapters out, so the landing page's links to them cannot resolve there.
    if draft: sphinx_config['suppress_warnings'] = sphinx_config.get('suppress_warnings', []) + ['myst.xref_missing']
    if keep_errors:  # a diagnostic build: a failing cell shows its traceback instead of stopping the build
        config.setdefault('execute', {})['allow_errors'] = True
        sphinx_config['nb_execution_raise_on_error'] = False
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding='utf-8')


def check_no_directive_shown(html_dir):
    "Fail if a code block of the rendered book still shows an nbdev directive."
    shown = [page.name for page in html_dir.glob('*.html')
             if re.search(r'<pre>(?:<span></span>)?(?:<span class="c1">)?#\s*\|', page.read_text(encoding='utf-8'))]
    if shown: sys.exit(f'nbdev directives are visible in: {shown}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='_build/book', help='build folder, relative to the repository root')
    parser.add_argument('--keep-errors', action='store_true',
                        help='diagnostics only: build even when cells fail or Sphinx warns (never for publishing)')
    parser.add_argument('--only', nargs='+', metavar='NOTEBOOK',
                        help='a quick draft: the landing page and these notebooks (names without .ipynb)')
    args = parser.parse_args()
    out = ROOT / args.out
    src = out / 'src'
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)

    ini = configparser.ConfigParser(delimiters=['='])
    ini.read(ROOT / 'settings.ini')
    skip_flags = ini['DEFAULT'].get('tst_flags', '').split()
    # The repository URL is set once, in _config.yml (launch buttons, repository button); the package's must agree.
    repo_url = yaml.safe_load((NBS / '_config.yml').read_text(encoding='utf-8'))['repository']['url']
    if ini['DEFAULT'].get('git_url') != repo_url:
        sys.exit(f"settings.ini git_url ({ini['DEFAULT'].get('git_url')}) is not _config.yml's repository.url ({repo_url})")

    for name in BOOK_FILES: shutil.copy(NBS / name, src / name)
    bundle_assets(src, draft=bool(args.only), keep_errors=args.keep_errors)
    if args.only:
        chapters = ''.join(f'  - file: {name}\n' for name in args.only + ['references'])
        (src / '_toc.yml').write_text(f'format: jb-book\nroot: index\nchapters:\n{chapters}', encoding='utf-8')
    (src / 'references.md').write_text(BIBLIOGRAPHY_PAGE, encoding='utf-8')
    for nb_path in sorted(NBS.glob('*.ipynb')):
        convert(nb_path, src / nb_path.name, skip_flags)

    start = time.time()
    cmd = [str(Path(sys.executable).parent / 'jupyter-book'), 'build', str(src), '--path-output', str(out)]
    if not args.keep_errors: cmd += ['--warningiserror', '--keep-going']
    result = subprocess.run(cmd)
    if result.returncode != 0:
        sys.exit(f'The book did not build (exit code {result.returncode}); see the messages above.')
    check_no_directive_shown(out / '_build' / 'html')
    index = out / '_build' / 'html' / 'index.html'
    print(f'Built the book in {time.time() - start:.0f} s: {index}')


if __name__ == '__main__':
    main()
