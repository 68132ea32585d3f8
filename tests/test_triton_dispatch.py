"""The base dispatches fused=True to the one-launch Triton step where it is available, and the result agrees with
the per-tensor rule. Without a GPU it runs in Triton's CPU interpreter, in a subprocess so that TRITON_INTERPRET=1 is
set before triton is imported. The kernels themselves are tested in test_triton_step.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('triton')

SCRIPT = r'''
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
from optimizer_cases import CASES
from test_optimizers import make_params, param_groups, train, detached
from modern_updates.optim.triton_step import triton_step_available

device = 'cpu' if torch.cuda.device_count() == 0 else 'cuda'
out = {'available': triton_step_available(make_params(device=device))}
for case in CASES:
    config = case.configs[-1]
    fast, single = make_params(device=device), make_params(device=device)
    opt, _ = train(lambda ps: case.ours(param_groups(ps, config['lr']), fused=True, **config), fast, 6)
    train(lambda ps: case.ours(param_groups(ps, config['lr']), foreach=False, **config), single, 6)
    paths = sorted({plan[1] for plan in opt._plans.values()})
    error = max((a - b).abs().max().item() for a, b in zip(detached(fast), detached(single)))
    out[case.name] = dict(paths=paths, error=error)
print(json.dumps(out))
'''


@pytest.fixture(scope='module')
def results():
    env = dict(os.environ, TRITON_INTERPRET=os.environ.get('TRITON_INTERPRET', '1'))
    tests = Path(__file__).parent
    done = subprocess.run([sys.executable, '-c', SCRIPT, str(tests)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tests.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


OPTIMIZERS = ['SGD', 'Adam', 'Adagrad', 'RMSprop', 'AdamW', 'Lion']


@pytest.mark.parametrize('name', OPTIMIZERS)
def test_fused_true_dispatches_to_the_triton_step(results, name):
    if not results['available']: pytest.skip('the Triton step is not available here')
    assert results[name]['paths'] == ['triton']
    assert results[name]['error'] < 1e-5
