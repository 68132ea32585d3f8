"The norm-speed benchmark's rows (INTERFACES.md B), on a quick CPU run."
import torch

from modern_updates.benchmark import norm_speed
from modern_updates.norm import LayerNorm

KEYS = {'layer', 'dtype', 'shape', 'pass', 'ours_ms', 'torch_ms', 'liger_ms', 'roof_ms', 'ratio_vs_torch'}


def test_quick_cpu_rows():
    rows = norm_speed.run('cpu', quick=True, repeats=1)
    assert {r['layer'] for r in rows} == {'LayerNorm', 'RMSNorm', 'BatchNorm2d'}
    assert all(set(r) == KEYS and r['pass'] in ('fwd', 'fwd+bwd') for r in rows)
    assert all(r['ours_ms'] > 0 and r['torch_ms'] > 0 and r['liger_ms'] is None and r['roof_ms'] is None for r in rows)
    assert 'ours/torch' in norm_speed.format_rows(rows)


def test_eager_layernorm_runs_torch_s_kernel_and_autograd():
    "Float32 LayerNorm on the CPU: torch's backward node, so no Python on the way back; rows that overflow are rescued."
    x = torch.randn(4, 3, 8, requires_grad=True)
    assert LayerNorm(8)(x).grad_fn.name() == 'NativeLayerNormBackward0'
    huge = LayerNorm(8)(x * 2.0 ** 100)
    assert huge.grad_fn.name() != 'NativeLayerNormBackward0'
    exact = LayerNorm(8, dtype=torch.float64)(x.double() * 2.0 ** 100)   # no overflow in float64
    torch.testing.assert_close(huge, exact.float())
