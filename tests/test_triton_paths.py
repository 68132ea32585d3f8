"""The one-launch Triton step (`fused=True` where Triton runs) against the rule, on the generated cases of
path_cases.py: under Triton's CPU interpreter in `make test`, natively on a GPU in .ci/gpu."""
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from path_cases import OPTIMIZERS, SETTINGS, assert_equal_runs, draw_case, groups, run

pytest.importorskip('triton')
from modern_updates.optim.triton_step import triton_step_available  # noqa: E402

DEVICE = 'cuda' if torch.cuda.is_available() and os.environ.get('TRITON_INTERPRET', '0') in ('', '0') else 'cpu'
if not triton_step_available([torch.zeros(1, device=DEVICE)]):
    pytest.skip('the Triton step runs here neither natively nor in the interpreter (TRITON_INTERPRET=1)',
                allow_module_level=True)


@pytest.mark.parametrize('opt_class', OPTIMIZERS, ids=lambda c: c.__name__)
@settings(max_examples=20, **SETTINGS)
@given(data=st.data())
def test_the_triton_step_equals_the_rule(opt_class, data):
    "Real floating parameters of any layout, dtype and shape, gradients of any layout, steps skipped: one launch per"
    " device and dtype, equal to the same launch on contiguous copies (to the bit) and to the per-tensor rule."
    specs, config = draw_case(data, opt_class, complex_ok=False)
    make_fused = lambda ps: opt_class(groups(ps, config), fused=True, **config)
    actual, opt, _ = run(make_fused, specs, device=DEVICE)
    assert {plan[1] for plan in opt._plans.values()} <= {'triton'}
    twin, *_ = run(make_fused, specs, plain=True, device=DEVICE)
    assert_equal_runs(actual, twin, specs, arithmetic='exact', what='the Triton step on these layouts and on copies')
    rule, *_ = run(lambda ps: opt_class(groups(ps, config), foreach=False, **config), specs, plain=True,
                   device=DEVICE)
    assert_equal_runs(actual, rule, specs, what='the Triton step against the per-tensor rule')


@pytest.mark.parametrize('opt_class', OPTIMIZERS, ids=lambda c: c.__name__)
def test_a_gradient_at_the_same_address_in_another_layout(opt_class):
    "p.grad set to one buffer, then to its transpose: the same address, another layout, which the table must see."
    config = OPTIMIZERS[opt_class][0][-1]
    g = torch.Generator().manual_seed(4)
    start = torch.randn(4, 4, generator=g)
    fused, rule = (torch.nn.Parameter(start.clone().to(DEVICE)) for _ in range(2))
    opt, ref = opt_class([fused], fused=True, **config), opt_class([rule], foreach=False, **config)
    buffer = torch.empty(4, 4, device=DEVICE)
    for t in range(4):
        buffer.copy_(torch.randn(4, 4, generator=g))
        fused.grad = buffer if t % 2 == 0 else buffer.t()  # one address, two layouts
        rule.grad = fused.grad.contiguous()
        opt.step(), ref.step()
    torch.testing.assert_close(fused, rule, rtol=1e-5, atol=1e-6)
