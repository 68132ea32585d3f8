"""Write README.md from nbs/index.ipynb (Quarto's nbdev_readme is not available everywhere).

Markdown cells are copied as they are; code cells that are not hidden become ```python blocks. Links to the book's
pages (`01_gradient_descent.ipynb`, `references.md`) point to the published book, whose address is `html.baseurl`
in nbs/_config.yml. A markdown cell that starts with `<!-- readme-only -->` is in the README but not in the book.
`--check` exits 1, without writing, when README.md differs from what it would write.
"""
import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from nbdev_directives import README_ONLY, split_directives, tags_for

ROOT = Path(__file__).resolve().parents[2]
HEADER = '<!-- Generated from nbs/index.ipynb by `make export`: edit the notebook, not this file. -->\n\n'
PAGE_LINK = re.compile(r'\]\((?!https?:|#)([\w.-]+?)\.(?:ipynb|md)(#[\w-]*)?\)')


def book_config(nbs=ROOT / 'nbs'):
    "nbs/_config.yml, where the repository and the book's addresses are set once."
    return yaml.safe_load((nbs / '_config.yml').read_text(encoding='utf-8'))


def readme_text(index_path=ROOT / 'nbs' / 'index.ipynb'):
    "The README that the index notebook gives."
    nb = json.loads(index_path.read_text(encoding='utf-8'))
    book_url = book_config(index_path.parent)['html']['baseurl'].rstrip('/') + '/'
    parts = []
    for cell in nb['cells']:
        source = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
        if cell['cell_type'] == 'markdown':
            if source.startswith(README_ONLY): source = source[len(README_ONLY):]
            parts.append(PAGE_LINK.sub(lambda m: f']({book_url}{m[1]}.html{m[2] or ""})', source.strip()))
        elif cell['cell_type'] == 'code':
            directives, code = split_directives(source)
            if not {'remove-cell', 'remove-input'} & set(tags_for(directives)) and code.strip():
                parts.append(f'```python\n{code.strip()}\n```')
    return HEADER + '\n\n'.join(parts) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='only check that README.md is up to date')
    args = parser.parse_args()
    readme, text = ROOT / 'README.md', readme_text()
    if args.check:
        if readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `make export`.')
        return
    readme.write_text(text, encoding='utf-8')


if __name__ == '__main__':
    main()
