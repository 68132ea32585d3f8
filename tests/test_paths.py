"""Every optimizer on every path against the per-tensor rule and torch.optim's for-loop, on generated cases.

The cases (path_cases.py) are what the kernels' contracts are about: parameters and gradients in other memory layouts
than each other's, several dtypes, complex, empty and 0-d parameters, sparse gradients, parameters that skip steps.
A path must give, on them, what the rule gives on plain contiguous copies. The Triton step, under the interpreter
here and natively on a GPU, is tested the same way in test_triton_paths.py.
"""
import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modern_updates.optim import kernels
from path_cases import (OPTIMIZERS, SETTINGS, SPARSE, STEPS, TORCH_FUSED, assert_equal_runs, draw_case, gradient,
                        groups, make, run)

OPTIMIZERS_BY_NAME = {c.__name__: c for c in OPTIMIZERS}
PATHS = {'default': {}, 'foreach': dict(foreach=True), 'single': dict(foreach=False), 'fused': dict(fused=True)}


def check_path(opt_class, path, specs, config, device_kw=None):
    "The path on the case against the rule and torch.optim on plain copies; the refusals it must make."
    keywords = config | PATHS[path]
    sparse = any(s['grad_layout'] == 'sparse' for s in specs)
    l2 = config.get('weight_decay', 0) != 0 and not config.get('decoupled_weight_decay')
    if sparse and (path in ('foreach', 'fused') or l2):  # torch refuses these too, and so do we, saying why
        with pytest.raises((RuntimeError, ValueError), match='sparse'):
            run(lambda ps: opt_class(groups(ps, config), **keywords), specs)
        return
    wrong = kernels.TORCH_FUSED[opt_class.rule].wrong_dtypes.get('cpu', ()) if path == 'fused' else ()
    if any(s['dtype'] in wrong for s in specs):  # a kernel that would be silently wrong: refused by name
        with pytest.raises(RuntimeError, match=r'fused=True, but .* computes torch\.\w+ wrongly on cpu \(parameter'):
            run(lambda ps: opt_class(groups(ps, config), **keywords), specs)
        return
    actual, opt, params = run(lambda ps: opt_class(groups(ps, config), **keywords), specs)
    # The same path on contiguous copies: the layout must change nothing (a kernel, on dense copies: to the bit)
    twin, *_ = run(lambda ps: opt_class(groups(ps, config), **keywords), specs, plain=True)
    assert_equal_runs(actual, twin, specs, arithmetic='exact' if path == 'fused' else 'same', what=f'{path} on these layouts against {path} on contiguous copies')
    # The per-tensor rule on contiguous copies
    rule, *_ = run(lambda ps: opt_class(groups(ps, config), **config | dict(foreach=False)), specs, plain=True)
    assert_equal_runs(actual, rule, specs, what=f'{path} against the per-tensor rule')
    reference = OPTIMIZERS[opt_class][1]
    if reference is not None:  # torch.optim's for-loop on contiguous copies
        expected, *_ = run(lambda ps: reference(groups(ps, config), **config | dict(foreach=False)), specs, plain=True)
        assert_equal_runs(actual, expected, specs, what=f'{path} against torch.optim.{reference.__name__}')
    steps = [int(opt.state[p]['step']) for p in params]
    assert steps == [STEPS - len(s['skips']) for s in specs], "a skipped step must not count"


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('opt_class', OPTIMIZERS, ids=lambda c: c.__name__)
@settings(max_examples=30, **SETTINGS)
@given(data=st.data())
def test_every_path_equals_the_rule(opt_class, path, data):
    if path == 'fused' and opt_class not in TORCH_FUSED:
        return  # no torch kernel: fused=True is refused (test below), or takes the Triton step (test_triton_paths)
    specs, config = draw_case(data, opt_class, sparse_ok=opt_class in SPARSE)
    check_path(opt_class, path, specs, config)


def test_the_strided_slice_of_the_issue_steps_as_torch():
    "A parameter that is a strided slice, its gradient set by hand: torch's fused kernels walk it wrongly; ours not."
    base = torch.randn(10, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours, theirs = (torch.nn.Parameter(base.clone()[..., 0]) for _ in range(2))
    o1, o2 = OPTIMIZERS_BY_NAME['Adam']([ours], lr=0.05), torch.optim.Adam([theirs], lr=0.05, fused=True)
    contiguous = torch.nn.Parameter(base.clone()[..., 0].contiguous())
    o3 = torch.optim.Adam([contiguous], lr=0.05, fused=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        grad = torch.randn(10, 5, dtype=torch.float64, generator=g)
        ours.grad, theirs.grad, contiguous.grad = grad.clone(), grad.clone(), grad.clone()
        o1.step(), o2.step(), o3.step()
    assert torch.equal(ours, contiguous)  # the same kernel, on a dense copy: to the bit
    assert (theirs - contiguous).abs().max() > 0.01  # torch's fused kernel on the slice itself: wrong


@pytest.mark.parametrize('opt_class', OPTIMIZERS, ids=lambda c: c.__name__)
def test_a_gradient_that_changes_layout_between_steps(opt_class):
    "The same parameter's gradient contiguous, then transposed, then contiguous: the plan must not keep the layout."
    specs = [dict(shape=(4, 4), dtype=torch.float32, layout='contiguous', grad_layout=layout, order=[1, 0],
                  skips=set()) for layout in ('contiguous', 'permuted')]
    config = OPTIMIZERS[opt_class][0][-1]
    params = make(specs)
    opt = opt_class(params, **config)
    rule_params = make(specs, plain=True)
    rule = opt_class(rule_params, **config | dict(foreach=False))
    g = torch.Generator().manual_seed(3)
    for t in range(4):
        grads = [torch.randn(4, 4, generator=g) for _ in params]
        for p, q, grad in zip(params, rule_params, grads):
            p.grad = grad.t().contiguous().t() if t % 2 else grad  # another layout every other step
            q.grad = grad.clone()
        opt.step(), rule.step()
    for p, q in zip(params, rule_params): torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('opt_class', TORCH_FUSED, ids=lambda c: c.__name__)
def test_gradscaler_unscales_gradients_copied_into_their_layout(opt_class):
    "Under GradScaler, torch's kernels unscale the gradients in place: a gradient copied into its parameter's layout"
    " must come back unscaled too, as torch.optim leaves it."
    specs = [dict(shape=(3, 5), dtype=torch.float32, layout='permuted', grad_layout='contiguous', order=[1, 0],
                  skips=set())]
    params = make(specs)
    opt = opt_class(params, **OPTIMIZERS[opt_class][0][0])
    scaler = torch.amp.GradScaler('cpu', init_scale=4.0)
    scaler.scale(torch.ones(()))  # makes its scale, as scaling the loss does
    grad = torch.randn(3, 5, generator=torch.Generator().manual_seed(2))
    params[0].grad = grad * 4.0  # as scaler.scale(loss).backward() would leave it
    scaler.step(opt)
    torch.testing.assert_close(params[0].grad, grad)
    assert opt._plans[0][1] == 'fused'  # GradScaler handed the kernel its scale


@pytest.mark.parametrize('opt_class,keywords,message', [
    (OPTIMIZERS_BY_NAME['RMSprop'], {}, 'torch has no fused kernel for rmsprop_direction'),
    (OPTIMIZERS_BY_NAME['Lion'], {}, 'torch has no fused kernel for lion_direction'),
    (OPTIMIZERS_BY_NAME['SGD'], dict(momentum=0.9, ema=True), "no ema=True"),
    (OPTIMIZERS_BY_NAME['Adam'], dict(kahan_summation=True), 'kahan_summation'),
    (OPTIMIZERS_BY_NAME['AdamW'], dict(stochastic_rounding=True), 'stochastic_rounding'),
], ids=['RMSprop', 'Lion', 'SGD-ema', 'Adam-kahan', 'AdamW-rounding'])
def test_fused_true_where_no_kernel_takes_it_is_refused_by_name(opt_class, keywords, message, monkeypatch):
    "fused=True outside every kernel's contract: refused, saying why (never a silent fallback to a wrong kernel)."
    monkeypatch.delitem(kernels.KERNEL_STEPS, 'triton', raising=False)  # as on a CPU without Triton's interpreter
    p = torch.nn.Parameter(torch.randn(3))
    p.grad = torch.randn(3)
    with pytest.raises(RuntimeError, match=f'fused=True, but .*{message}'):
        opt_class([p], lr=0.01, fused=True, **keywords).step()


def test_fused_true_with_sparse_gradients_is_refused_by_name():
    p = torch.nn.Parameter(torch.randn(4, 3))
    p.grad = torch.randn(4, 3).to_sparse()
    with pytest.raises(RuntimeError, match='sparse gradients step one tensor at a time'):
        OPTIMIZERS_BY_NAME['SGD']([p], lr=0.1, fused=True).step()


# ---- on a GPU: every path, torch's CUDA kernels and a captured step (run by .ci/gpu) ----

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')


@CUDA
@pytest.mark.parametrize('path', ['default', 'foreach', 'single', 'torch fused'])
@pytest.mark.parametrize('opt_class', OPTIMIZERS, ids=lambda c: c.__name__)
@settings(max_examples=10, **SETTINGS)
@given(data=st.data())
def test_every_path_on_cuda_equals_the_rule(opt_class, path, data):
    "On a GPU the default is the Triton step; 'torch fused' hides Triton, so that fused=True takes torch's kernels."
    from unittest import mock
    if path == 'torch fused' and opt_class not in TORCH_FUSED: return
    specs, config = draw_case(data, opt_class)
    devices = data.draw(st.lists(st.sampled_from(['cuda', 'cuda', 'cpu']), min_size=len(specs), max_size=len(specs)),
                        label='devices')
    specs = [s | dict(device=d) for s, d in zip(specs, devices)]
    keywords = config | (dict(fused=True) if path == 'torch fused' else PATHS[path])
    no_triton = mock.patch.dict(kernels.KERNEL_STEPS, clear=True)
    kernel = kernels.TORCH_FUSED.get(opt_class.rule)
    if path == 'torch fused' and any(s['dtype'] in kernel.wrong_dtypes.get(s['device'], ()) for s in specs):
        with no_triton, pytest.raises(RuntimeError, match='wrongly'):  # refused, by name
            run(lambda ps: opt_class(groups(ps, config), **keywords), specs, device='cuda')
        return
    with no_triton if path == 'torch fused' else contextlib.nullcontext():
        actual, *_ = run(lambda ps: opt_class(groups(ps, config), **keywords), specs, device='cuda')
        twin, *_ = run(lambda ps: opt_class(groups(ps, config), **keywords), specs, plain=True, device='cuda')
    assert_equal_runs(actual, twin, specs, arithmetic='same', what=f'{path} (cuda) on layouts and on copies')
    on_cpu = [s | dict(device='cpu') for s in specs]
    rule, *_ = run(lambda ps: opt_class(groups(ps, config), **config | dict(foreach=False)), on_cpu, plain=True)
    assert_equal_runs([a.cpu() for a in actual], rule, specs, what=f'{path} (cuda) against the rule (cpu)')


@CUDA
@pytest.mark.parametrize('opt_class', OPTIMIZERS, ids=lambda c: c.__name__)
@settings(max_examples=6, **SETTINGS)
@given(data=st.data())
def test_a_captured_step_equals_the_rule(opt_class, data):
    "capturable=True, captured in a CUDA graph and replayed, on parameters and gradients of any layout (gradients"
    " stay at their addresses, as a captured graph needs; no gradient skips)."
    specs, config = draw_case(data, opt_class, complex_ok=False)
    specs = [s | dict(skips=set(), grad_layout='contiguous' if s['grad_layout'] in ('expanded', 'sparse')
                      else s['grad_layout']) for s in specs]

    def replayed(plain, captured):
        params = make(specs, plain, 'cuda')
        g = torch.Generator().manual_seed(1)
        grads = [gradient(spec, p, g) for spec, p in zip(specs, params)]
        for p, grad in zip(params, grads): p.grad = grad.contiguous() if plain else grad
        lr = torch.tensor(config['lr'], device='cuda')
        opt = opt_class(params, **config | dict(lr=lr, capturable=True, nonfinite='ignore'))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2): opt.step()  # state and kernels before the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if captured:
            with torch.cuda.graph(graph): opt.step()
        for _ in range(STEPS):
            for spec, p in zip(specs, params): p.grad.copy_(gradient(spec, p, g))  # in place: same layout
            graph.replay() if captured else opt.step()
        torch.cuda.synchronize()
        return [p.detach().cpu() for p in params]
    actual = replayed(plain=False, captured=True)
    assert_equal_runs(actual, replayed(plain=True, captured=False), specs, what='captured against the eager step')


@pytest.mark.parametrize('opt_class', OPTIMIZERS, ids=lambda c: c.__name__)
def test_a_model_moved_to_channels_last_after_some_steps(opt_class):
    "model.to(memory_format=channels_last) gives the parameters new data in another layout, under a plan made for the"
    " old one and state in the old one: the step must still pair each element with its own gradient and state."
    config = OPTIMIZERS[opt_class][0][-1]
    torch.manual_seed(0)
    moved = torch.nn.Conv2d(3, 4, 3)
    kept = torch.nn.Conv2d(3, 4, 3)
    kept.load_state_dict(moved.state_dict())
    opt = opt_class(moved.parameters(), **config)
    ref = opt_class(kept.parameters(), **config | dict(foreach=False))
    x = torch.randn(2, 3, 6, 6)
    for t in range(4):
        if t == 2: moved.to(memory_format=torch.channels_last)
        for model, o in ((moved, opt), (kept, ref)):
            o.zero_grad()
            model(x.contiguous(memory_format=torch.channels_last) if t >= 2 and model is moved else x).square().mean(
                ).backward()
            o.step()
    assert not moved.weight.is_contiguous()  # the test moved it
    for a, b in zip(moved.parameters(), kept.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
