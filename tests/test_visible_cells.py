"""Each chapter's code, as a reader sees it: the cells the book shows (folded or not), alone, in order, in a fresh kernel.

A reader who copies a chapter's visible code into a notebook must be able to run it: no cell may need a helper that
only a hidden cell defines. The cells are picked by the rules that the book build uses (nbs/_scripts/nbdev_directives.py:
`#| hide`, `#| echo: false` and cells the book does not run are left out). Each chapter runs in its own process, several
at a time; a failure names the notebook, the cell and the error.

    python tests/test_visible_cells.py nbs/04_adam.ipynb   # one chapter, with the time of each cell
"""
import configparser
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
sys.path.insert(0, str(NBS / '_scripts'))
from book_metrics import toc_pages  # noqa: E402
from nbdev_directives import reader_cells  # noqa: E402

ORDER, APPENDIX = toc_pages()
CHAPTERS = [name for name in ORDER[1:] if name not in APPENDIX]
WORKERS = int(os.environ.get('VISIBLE_CELLS_WORKERS', max(1, min(4, os.cpu_count() or 1))))
TIMEOUT = 600  # seconds for one chapter


def skip_flags():
    ini = configparser.ConfigParser(delimiters=['='])
    ini.read(ROOT / 'settings.ini')
    return ini['DEFAULT'].get('tst_flags', '').split()


def run_notebook(path):
    "Run the reader's cells of one notebook in this process; print one JSON line: the failure, or None, and the times."
    from execnb.shell import CaptureShell
    nb = json.loads(Path(path).read_text(encoding='utf-8'))
    shell, times, failure = CaptureShell(), [], None
    os.chdir(Path(path).parent)
    for index, code in reader_cells(nb, skip_flags()):
        start = time.time()
        shell.run(code)
        times.append((index, round(time.time() - start, 2)))
        if shell.exc is not None:
            error = shell.exc
            failure = dict(cell=index, first_line=code.strip().splitlines()[0][:70] if code.strip() else '',
                           error=f'{type(error).__name__}: {error}'[:400])
            break
    print(json.dumps(dict(failure=failure, times=times)))


def run_chapter(name):
    "Run one chapter's reader cells in a fresh process: (failure or None, seconds, per-cell times)."
    env = dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='agg', PYTHONWARNINGS='ignore')
    start = time.time()
    try:
        result = subprocess.run([sys.executable, __file__, str(NBS / f'{name}.ipynb')], capture_output=True,
                                text=True, env=env, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return dict(cell=None, error=f'took more than {TIMEOUT} s'), time.time() - start, []
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"failure"')]
    if result.returncode != 0 or not lines:
        return dict(cell=None, error=(result.stderr or result.stdout)[-1500:]), time.time() - start, []
    out = json.loads(lines[-1])
    return out['failure'], time.time() - start, out['times']


@pytest.fixture(scope='module')
def results():
    "Every chapter, run WORKERS at a time."
    start = time.time()
    with ThreadPoolExecutor(WORKERS) as pool:
        done = dict(zip(CHAPTERS, pool.map(run_chapter, CHAPTERS)))
    print(f'\nvisible cells of {len(CHAPTERS)} chapters, {WORKERS} at a time: {time.time() - start:.0f} s; '
          + ', '.join(f'{name} {seconds:.0f} s' for name, (_, seconds, _) in done.items()))
    return done


def test_every_chapter_is_checked():
    assert len(CHAPTERS) >= 16, f'chapters found in nbs/_toc.yml: {CHAPTERS}'
    missing = [name for name in CHAPTERS if not (NBS / f'{name}.ipynb').exists()]
    assert not missing, f'notebooks of nbs/_toc.yml not found: {missing}'


@pytest.mark.parametrize('name', CHAPTERS)
def test_visible_cells_run_alone(results, name):
    failure, _, _ = results[name]
    assert failure is None, (f"{name}.ipynb: the visible cell {failure['cell']} "
                             f"({failure.get('first_line', '')!r}) fails when run after the chapter's visible cells "
                             f"alone: {failure['error']}")


if __name__ == '__main__':
    run_notebook(sys.argv[1])
