"""A wheel built from the repository installs into a fresh environment that has only torch, and works there."""
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SMOKE = textwrap.dedent('''
    import importlib, pkgutil, sys
    import torch
    import modern_updates
    from modern_updates.optim import SGD
    # every module but the figure helpers (the `plot` extra) imports with torch alone
    names = [m.name for m in pkgutil.walk_packages(modern_updates.__path__, 'modern_updates.')]
    for name in names:
        if name == 'modern_updates.plotting' or name.endswith('__main__'): continue
        try: importlib.import_module(name)
        except ModuleNotFoundError as error:  # the norm kernels are Triton code: only they may need triton
            assert error.name == 'triton' and name == 'modern_updates.norm.triton_kernels', (name, error)
    for extra in ['matplotlib', 'numpy', 'nbdev', 'fastcore']:
        assert extra not in sys.modules, f'{extra} was imported'
    w = torch.ones(3, requires_grad=True)
    opt = SGD([w], lr=0.1, momentum=0.9)
    (w ** 2).sum().backward(); opt.step()
    assert torch.allclose(w, torch.full((3,), 0.8)), w
    from modern_updates.norm import LayerNorm, RMSNorm   # the layers work without triton
    x = torch.randn(2, 4, requires_grad=True)
    (LayerNorm(4)(x).sum() + RMSNorm(4)(x).sum()).backward()
    print('wheel ok:', modern_updates.__version__, len(names), 'modules')
''')


@pytest.fixture(scope='module')
def fresh_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('wheel')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--quiet', '--no-deps', '-w', str(tmp / 'dist'), str(ROOT)],
                   check=True)
    venv.create(tmp / 'env', with_pip=True)
    python = tmp / 'env' / 'bin' / 'python'
    torch_pin = [line for line in (ROOT / 'constraints-dev.txt').read_text().splitlines() if line.startswith('torch==')]
    subprocess.run([str(python), '-m', 'pip', 'install', '--quiet', *torch_pin, *map(str, (tmp / 'dist').glob('*.whl'))],
                   check=True)
    return python


def test_wheel_installs_with_torch_alone_and_steps(fresh_env):
    result = subprocess.run([str(fresh_env), '-c', SMOKE], capture_output=True, text=True, cwd='/')
    assert result.returncode == 0, result.stderr
    assert 'wheel ok' in result.stdout


def test_wheel_declares_only_torch(fresh_env):
    result = subprocess.run([str(fresh_env), '-m', 'pip', 'show', 'modern-updates'], capture_output=True, text=True)
    requires = next(line for line in result.stdout.splitlines() if line.startswith('Requires:'))
    assert requires.split(':', 1)[1].strip() == 'torch', requires
