"""Give every notebook a first cell that installs the package (and what else the notebook imports) when it is
missing, so that a chapter downloaded from the book, or opened in Colab or Binder, runs as it is. The cell is hidden
from the book (`#| hide`), and in this repository (where everything is installed) it installs nothing.

    python nbs/_scripts/add_install_cell.py [NOTEBOOK ...]     # default: every nbs/*.ipynb; --check only checks

Idempotent: a notebook whose first cell is already this one (its id is `install-if-missing`) is rewritten only
when the cell's text changed. The notebook is read and written at once.
"""
import argparse
import json
import re
import sys
from pathlib import Path

NBS = Path(__file__).resolve().parents[1]
CELL_ID = 'install-if-missing'
# What a notebook may import besides torch and the standard library: import name -> pip name.
# The package itself, with its `plot` extra, is always needed.
EXTRAS = {'matplotlib': 'matplotlib', 'numpy': 'numpy', 'nbdev': 'nbdev', 'fastcore': 'fastcore',
          'lion_pytorch': 'lion-pytorch', 'schedulefree': 'schedulefree'}
TEMPLATE = """#| hide
# In a fresh Colab or Binder session: install what this notebook needs and is missing.
import importlib.util, subprocess, sys
needs = {needs!r}
missing = [pip for name, pip in needs.items() if importlib.util.find_spec(name) is None]
if missing: subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', *missing], check=True)"""


def imported(nb):
    "Top-level names the notebook's code cells import."
    names = set()
    for cell in nb['cells']:
        if cell['cell_type'] != 'code': continue
        for line in ''.join(cell['source']).splitlines():
            if m := re.match(r'\s*(?:from|import)\s+(\w+)', line): names.add(m[1])
    return names


# Optional dependencies that the package itself imports to read a data set: import name -> (pip name, what a
# notebook's code calls when it reads that data set).
DATA_EXTRAS = {'sklearn': ('scikit-learn', '_digits_data')}


def source_for(nb):
    "The install cell for this notebook: the package with its figure helpers, and what else the notebook imports."
    needs = {'modern_updates': 'modern-updates[plot]'}
    needs.update({name: pip for name, pip in EXTRAS.items() if name in imported(nb)})
    code = '\n'.join(''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code')
    needs.update({name: pip for name, (pip, marker) in DATA_EXTRAS.items() if marker in code})
    return TEMPLATE.format(needs=needs)


def install_cell(nb):
    return {'cell_type': 'code', 'execution_count': None, 'id': CELL_ID, 'metadata': {}, 'outputs': [],
            'source': source_for(nb)}


def has_install_cell(nb):
    cells = nb['cells']
    return bool(cells) and cells[0].get('id') == CELL_ID and ''.join(cells[0]['source']) == source_for(nb)


def add(path):
    "Insert or refresh the cell at position 0; True when the file changed."
    text = path.read_text(encoding='utf-8')
    nb = json.loads(text)
    if has_install_cell(nb): return False
    nb['cells'] = [install_cell(nb)] + [c for c in nb['cells'] if c.get('id') != CELL_ID]
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('notebooks', nargs='*', type=Path)
    parser.add_argument('--check', action='store_true', help='only list the notebooks without the cell; exit 1 if any')
    args = parser.parse_args()
    paths = args.notebooks or sorted(NBS.glob('*.ipynb'))
    if args.check:
        missing = [p.name for p in paths if not has_install_cell(json.loads(p.read_text(encoding='utf-8')))]
        if missing: sys.exit(f'no install-if-missing first cell in: {missing}; run nbs/_scripts/add_install_cell.py')
        return
    for path in paths:
        if add(path): print(f'added the install cell to {path.name}')


if __name__ == '__main__':
    main()
