"""Write README.md from nbs/index.ipynb (Quarto's nbdev_readme is not available everywhere).

Markdown cells are copied as they are; code cells that are not hidden become ```python blocks.
`--check` exits 1, without writing, when README.md differs from what it would write.
"""
import argparse
import json
import sys
from pathlib import Path

from nbdev_directives import split_directives, tags_for

ROOT = Path(__file__).resolve().parents[2]
HEADER = '<!-- Generated from nbs/index.ipynb by `make export`: edit the notebook, not this file. -->\n\n'


def readme_text(index_path=ROOT / 'nbs' / 'index.ipynb'):
    "The README that the index notebook gives."
    nb = json.loads(index_path.read_text(encoding='utf-8'))
    parts = []
    for cell in nb['cells']:
        source = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
        if cell['cell_type'] == 'markdown':
            parts.append(source.strip())
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
