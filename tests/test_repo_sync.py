"""The repository agrees with itself: package = exported notebooks, notebooks clean, README = index notebook,
and the book build turns every nbdev directive into a Jupyter Book tag."""
import filecmp
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / 'nbs' / '_scripts'))
from build_book import convert  # noqa: E402
from nbdev_directives import split_directives  # noqa: E402
from readme import readme_text  # noqa: E402

NOTEBOOKS = sorted((ROOT / 'nbs').glob('*.ipynb'))


def _copy_project(tmp_path):
    shutil.copy(ROOT / 'settings.ini', tmp_path / 'settings.ini')
    shutil.copytree(ROOT / 'nbs', tmp_path / 'nbs', ignore=shutil.ignore_patterns('_build', '.ipynb_checkpoints'))
    shutil.copytree(ROOT / 'modern_updates', tmp_path / 'modern_updates', ignore=shutil.ignore_patterns('__pycache__'))
    return tmp_path


def _differences(cmp):
    diffs = [f'{cmp.left}/{n}' for n in cmp.diff_files + cmp.left_only + cmp.right_only if n != '__pycache__']
    for sub in cmp.subdirs.values(): diffs += _differences(sub)
    return diffs


def test_package_is_the_exported_notebooks(tmp_path):
    project = _copy_project(tmp_path)
    subprocess.run([str(BIN / 'nbdev_export')], cwd=project, check=True, capture_output=True)
    cmp = filecmp.dircmp(project / 'modern_updates', ROOT / 'modern_updates', ignore=['__pycache__'])
    assert not _differences(cmp), 'nbdev_export would change modern_updates/: run `make export` and commit'


def test_notebooks_are_clean(tmp_path):
    project = _copy_project(tmp_path)
    subprocess.run([str(BIN / 'nbdev_clean')], cwd=project, check=True, capture_output=True)
    dirty = [nb.name for nb in NOTEBOOKS if (project / 'nbs' / nb.name).read_bytes() != nb.read_bytes()]
    assert not dirty, f'not clean (outputs or metadata left in): {dirty}; run `make clean-nbs`'


def test_readme_is_the_index_notebook():
    assert (ROOT / 'README.md').read_text(encoding='utf-8') == readme_text(), 'README.md is stale: run `make export`'


@pytest.mark.parametrize('nb_path', NOTEBOOKS, ids=lambda p: p.name)
def test_book_copy_shows_no_directive_and_hides_hidden_cells(nb_path, tmp_path):
    convert(nb_path, tmp_path / nb_path.name, skip_flags=['slow'])
    original = json.loads(nb_path.read_text(encoding='utf-8'))['cells']
    converted = [c for c in json.loads((tmp_path / nb_path.name).read_text(encoding='utf-8'))['cells']
                 if c['id'] != 'sphinx-show-doc']
    assert len(converted) == len(original)
    for before, after in zip(original, converted):
        if after['cell_type'] != 'code': continue
        directives, _ = split_directives(''.join(before['source']))
        assert not split_directives(after['source'])[0], 'a directive is left in the book copy'
        tags = after.get('metadata', {}).get('tags', [])
        if ('hide', '') in directives or any(name == 'default_exp' for name, _ in directives):
            assert 'remove-cell' in tags
        if any(name == 'slow' for name, _ in directives):
            assert 'skip-execution' in tags
        if any(name == 'export' for name, _ in directives) and ('hide', '') not in directives:
            assert 'hide-input' in tags, 'exported code folds behind a toggle in the book'


def test_repository_url_is_set_once():
    "nbs/_config.yml sets the repository and the book's addresses; settings.ini (and so setup.py) agree with it."
    import configparser
    import yaml
    book = yaml.safe_load((ROOT / 'nbs' / '_config.yml').read_text(encoding='utf-8'))
    ini = configparser.ConfigParser(delimiters=['='])
    ini.read(ROOT / 'settings.ini', encoding='utf-8')
    cfg = ini['DEFAULT']
    assert cfg['git_url'] == book['repository']['url'], 'settings.ini git_url differs from _config.yml repository.url'
    assert cfg['branch'] == book['repository']['branch']
    assert (cfg['doc_host'] + cfg['doc_baseurl']).rstrip('/') == book['html']['baseurl'].rstrip('/')
    launch = book['launch_buttons']
    assert launch['colab_url'] and launch['binderhub_url'], 'the Colab and Binder buttons need their URLs'


def test_landing_page_links_every_page_of_the_toc():
    import re
    import yaml
    toc = yaml.safe_load((ROOT / 'nbs' / '_toc.yml').read_text(encoding='utf-8'))
    files = [c['file'] for part in toc['parts'] for c in part['chapters']]
    index = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text(encoding='utf-8'))
    text = '\n'.join(''.join(c['source']) for c in index['cells'] if c['cell_type'] == 'markdown')
    linked = set(re.findall(r'\]\(([\w.-]+?)\.(?:ipynb|md)\)', text))
    assert not [f for f in files if f not in linked], 'add these pages to the contents table of nbs/index.ipynb'
    # a link's number is the chapter's number: "[4. Adam](04_adam.ipynb)" for "# 4. Adam: ..."
    for label, name in re.findall(r'\[([0-9A-Z]+)\. [^\]]*\]\(([\w-]+)\.ipynb\)', text):
        nb = json.loads((ROOT / 'nbs' / f'{name}.ipynb').read_text(encoding='utf-8'))
        h1 = next(line for c in nb['cells'] if c['cell_type'] == 'markdown'
                  for line in ''.join(c['source']).splitlines() if line.startswith('# '))
        if re.match(r'# [0-9A-Z]+\. ', h1): assert h1.startswith(f'# {label}. '), (label, name, h1)


def test_every_notebook_installs_the_package_when_missing():
    "A chapter downloaded from the book, or opened in Colab or Binder, installs what it imports first."
    from add_install_cell import has_install_cell
    missing = [nb.name for nb in NOTEBOOKS if not has_install_cell(json.loads(nb.read_text(encoding='utf-8')))]
    assert not missing, f'no up-to-date install-if-missing first cell in {missing}: run `make export`'
