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
