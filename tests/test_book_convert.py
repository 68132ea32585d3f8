"""How the book build reads a chapter's cells (nbs/_scripts/build_book.py): which code shows, and the alt text of figures."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'nbs' / '_scripts'))
from build_book import convert  # noqa: E402
from nbdev_directives import reader_cells  # noqa: E402


def code(source): return dict(cell_type='code', execution_count=None, id=f'c{abs(hash(source)) % 10**8}',
                              metadata={}, outputs=[], source=source)


def markdown(source): return dict(cell_type='markdown', id=f'm{abs(hash(source)) % 10**8}', metadata={}, source=source)


CELLS = [code('#| exports\ndef rule(g): return g'),                                    # 0: the rule, shown
         code('#| export\nclass Opt: pass'),                                          # 1: the class, folded
         code('#| hide\nhelper = 1'),                                                 # 2: hidden
         code('#| code-fold: true\n#| fig-alt: Two lines that cross once\nplot()'),  # 3: its own alt text
         code('#| code-fold: true\nplot()'),                                          # 4: the caption's
         code('#| hide\nassert True'),
         markdown(r'*Loss against $\eta_t$ for {cite}`key` $\mathcal{L}(\theta)$. It ends at '
                  '{glue:text}`x:.2f`, a number.*'),
         code('#| echo: false\nplot()'),                                              # 7: output only
         markdown('## A heading, not a caption')]


def converted(tmp_path):
    path = tmp_path / 'chapter.ipynb'
    path.write_text(json.dumps(dict(cells=CELLS, metadata={}, nbformat=4, nbformat_minor=5)), encoding='utf-8')
    convert(path, tmp_path / 'out.ipynb', skip_flags=['slow'])
    return json.loads((tmp_path / 'out.ipynb').read_text(encoding='utf-8'))['cells']


def test_rule_shows_and_class_folds(tmp_path):
    cells = converted(tmp_path)
    assert 'tags' not in cells[0]['metadata'] and cells[0]['source'] == 'def rule(g): return g'
    assert cells[1]['metadata']['tags'] == ['hide-input']
    assert cells[2]['metadata']['tags'] == ['remove-cell']


def test_alt_text(tmp_path):
    alt = [c['metadata'].get('mystnb', {}).get('image', {}).get('alt') for c in converted(tmp_path)]
    assert alt[3] == 'Two lines that cross once'
    assert alt[4] == 'Loss against η_t for L(θ).'      # the caption's first sentence, as plain text
    assert alt[7] is None                              # a heading is no caption


def test_reader_cells():
    nb = dict(cells=CELLS)
    assert [i for i, _ in reader_cells(nb)] == [0, 1, 3, 4]
