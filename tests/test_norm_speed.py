"The norm-speed benchmark's rows (INTERFACES.md B), on a quick CPU run."
from modern_updates.benchmark import norm_speed

KEYS = {'layer', 'dtype', 'shape', 'pass', 'ours_ms', 'torch_ms', 'liger_ms', 'roof_ms', 'ratio_vs_torch'}


def test_quick_cpu_rows():
    rows = norm_speed.run('cpu', quick=True, repeats=1)
    assert {r['layer'] for r in rows} == {'LayerNorm', 'RMSNorm', 'BatchNorm2d'}
    assert all(set(r) == KEYS and r['pass'] in ('fwd', 'fwd+bwd') for r in rows)
    assert all(r['ours_ms'] > 0 and r['torch_ms'] > 0 and r['liger_ms'] is None and r['roof_ms'] is None for r in rows)
    assert 'ours/torch' in norm_speed.format_rows(rows)
