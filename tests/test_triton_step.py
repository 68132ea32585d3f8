"""The one-launch Triton step agrees with the per-tensor rules, for every optimizer and option.

Without a GPU the kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set below before triton is imported);
with a GPU the same tests run the compiled kernel on CUDA, unless TRITON_INTERPRET=1 asks for the interpreter. Only
then is the variable set: on a GPU, setting it here would turn the Triton path off for every test collected after this
file. Tensors are small: the interpreter is slow. The whole file is skipped when triton does not import.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
from conftest import spy_host_reads  # noqa: E402

try:
    import triton  # noqa: F401,E402
except ImportError:
    pytest.skip('triton is not installed', allow_module_level=True)

from modern_updates.optim import triton_step as ts  # noqa: E402
from modern_updates.optim.adagrad import adagrad_direction  # noqa: E402
from modern_updates.optim.adam import adam_direction  # noqa: E402
from modern_updates.optim.lion import lion_direction  # noqa: E402
from modern_updates.optim.rmsprop import rmsprop_direction  # noqa: E402
from modern_updates.optim.sgd import sgd_direction  # noqa: E402

INTERPRETED = ts._interpreting()
DEVICE = 'cpu' if INTERPRETED else 'cuda'
if not INTERPRETED and not torch.cuda.is_available():
    pytest.skip('TRITON_INTERPRET=0 and no GPU', allow_module_level=True)

RULES = {f.__name__: f for f in (sgd_direction, adagrad_direction, rmsprop_direction, adam_direction, lion_direction)}
STEPS = 30
LOW = (torch.bfloat16, torch.float16)


def reference_step(rule, p, g, state, step, hyper, *, lr, weight_decay, decoupled, initial_lr, maximize):
    "The base's per-tensor update (foreach=False) with the rule, in fp32 for a bf16/f16 parameter, rounded once."
    low = p.dtype in LOW
    P, G = (p.float(), g.float()) if low else (p, g)
    S = {k: v.float() for k, v in state.items()} if low else state
    if maximize: G = -G
    if weight_decay != 0 and not decoupled: G = G.add(P, alpha=weight_decay)
    if weight_decay != 0 and decoupled is True: P.mul_(1 - lr * weight_decay)
    if weight_decay != 0 and decoupled == 'schedule': P.mul_(1 - lr / initial_lr * weight_decay)
    P.add_(RULES[rule](G, **S, step=step, **hyper), alpha=-lr)
    if low:
        p.copy_(P)
        for k in state: state[k].copy_(S[k])


def make_state(rule, hyper, p, names):
    "State buffers as the optimizers create them, made non-trivial (as after earlier steps) where it is safe."
    state = {}
    for name in names:
        t = torch.zeros_like(p)
        if name in ('sum', 'square_avg', 'exp_avg_sq', 'max_exp_avg_sq'): t.uniform_(0.0, 0.1)
        state[name] = t
    if rule == 'adagrad_direction': state['sum'].fill_(0.1)  # initial_accumulator_value
    return state


NAMES = {
    'sgd_direction': lambda h: ['momentum_buffer'] * (h['momentum'] != 0),
    'adagrad_direction': lambda h: ['sum'],
    'rmsprop_direction': lambda h: ['square_avg'] + ['momentum_buffer'] * (h['momentum'] != 0)
    + ['grad_avg'] * h['centered'],
    'adam_direction': lambda h: ['exp_avg', 'exp_avg_sq'] + ['max_exp_avg_sq'] * h['amsgrad'],
    'lion_direction': lambda h: ['exp_avg'],
}

SGD = dict(momentum=0.0, dampening=0.0, nesterov=False, ema=False)
RMS = dict(alpha=0.99, eps=1e-8, momentum=0.0, centered=False)
ADAM = dict(betas=(0.9, 0.999), eps=1e-8, amsgrad=False)
CASES = {  # name: (rule, hyper, options)
    'sgd': ('sgd_direction', SGD, {}),
    'sgd-momentum-dampening-l2': ('sgd_direction', SGD | dict(momentum=0.9, dampening=0.1),
                                  dict(weight_decay=0.01)),
    'sgd-nesterov-maximize': ('sgd_direction', SGD | dict(momentum=0.9, nesterov=True), dict(maximize=True)),
    'sgd-ema': ('sgd_direction', SGD | dict(momentum=0.8, ema=True), {}),
    'sgd-ema-nesterov-decoupled': ('sgd_direction', SGD | dict(momentum=0.8, ema=True, nesterov=True),
                                   dict(weight_decay=0.05, decoupled=True)),
    'adagrad-lr_decay': ('adagrad_direction', dict(lr_decay=0.01, eps=1e-10), {}),
    'adagrad-l2-maximize': ('adagrad_direction', dict(lr_decay=0.0, eps=1e-6), dict(weight_decay=0.1, maximize=True)),
    'rmsprop': ('rmsprop_direction', RMS, {}),
    'rmsprop-centered-momentum': ('rmsprop_direction', RMS | dict(momentum=0.9, centered=True, alpha=0.9), {}),
    'rmsprop-momentum-l2': ('rmsprop_direction', RMS | dict(momentum=0.5), dict(weight_decay=0.01)),
    'adam': ('adam_direction', ADAM, {}),
    'adamw-amsgrad': ('adam_direction', ADAM | dict(amsgrad=True), dict(weight_decay=0.1, decoupled=True)),
    'adam-schedule-decay-tensor-lr': ('adam_direction', ADAM | dict(betas=(0.8, 0.99)),
                                      dict(weight_decay=0.1, decoupled='schedule', lr_tensor=True)),
    'adam-l2-maximize': ('adam_direction', ADAM, dict(weight_decay=0.01, maximize=True)),
    'lion': ('lion_direction', dict(betas=(0.9, 0.99)), dict(weight_decay=0.1, decoupled=True)),
    'lion-l2-maximize': ('lion_direction', dict(betas=(0.95, 0.98)), dict(weight_decay=0.01, maximize=True)),
}
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-13),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2), torch.float16: dict(rtol=4e-3, atol=4e-3)}


def run_case(rule, hyper, options, dtype, n_steps=STEPS, seed=0):
    """Triton and the reference side by side, on three tensors of different sizes (one crossing a block boundary):
    tensor 0 keeps its gradient tensor (updated in place), tensor 1 gets a fresh non-contiguous gradient each step,
    tensor 2 a fresh contiguous one; tensor 1 starts at step 5, the others at 0. The learning rate follows a schedule."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(DEVICE, dtype)
    params = [rand(1100), rand(6, 5), rand(7)]
    names = NAMES[rule](hyper)
    states = [make_state(rule, hyper, p, names) for p in params]
    ref_params = [p.clone() for p in params]
    ref_states = [{k: v.clone() for k, v in s.items()} for s in states]
    steps = [torch.tensor(float(s), device=DEVICE) for s in (0, 5, 0)]
    kept_grad = torch.zeros_like(params[0])
    wd, decoupled, maximize = options.get('weight_decay', 0.0), options.get('decoupled', False), options.get('maximize', False)
    initial_lr = 0.01
    for t in range(n_steps):
        lr = initial_lr * (1 - t / (2 * n_steps))  # a decaying schedule: never recompiles
        kept_grad.copy_(rand(1100))
        grads = [kept_grad, rand(5, 6).T, rand(7)]
        for s in steps: s += 1
        lr_arg = torch.tensor(lr, device=DEVICE) if options.get('lr_tensor') else lr
        ts.triton_step(rule, params, grads, {k: [s[k] for s in states] for k in names}, hyper, lr=lr_arg,
                       steps=steps, weight_decay=wd, decoupled=decoupled, initial_lr=initial_lr, maximize=maximize)
        for p, g, s, step in zip(ref_params, grads, ref_states, steps):
            reference_step(rule, p, g, s, int(step), hyper, lr=lr, weight_decay=wd, decoupled=decoupled,
                           initial_lr=initial_lr, maximize=maximize)
    return params, states, ref_params, ref_states


def assert_same(params, states, ref_params, ref_states, dtype):
    for i, (p, r) in enumerate(zip(params, ref_params)):
        torch.testing.assert_close(p, r, **TOL[dtype], msg=lambda m: f'param {i}: {m}')
        for k in states[i]:
            torch.testing.assert_close(states[i][k], ref_states[i][k], **TOL[dtype], msg=lambda m: f'{k} {i}: {m}')


@pytest.mark.parametrize('case', list(CASES))
def test_matches_rule_f32(case):
    rule, hyper, options = CASES[case]
    assert_same(*run_case(rule, hyper, options, torch.float32), torch.float32)


LOW_CASES = ['sgd-momentum-dampening-l2', 'adagrad-lr_decay', 'rmsprop-centered-momentum', 'adamw-amsgrad', 'lion']


@pytest.mark.parametrize('case', LOW_CASES)
def test_matches_rule_bf16_in_fp32(case):
    rule, hyper, options = CASES[case]
    params, states, ref_params, ref_states = run_case(rule, hyper, options, torch.bfloat16, seed=1)
    assert all(p.dtype == torch.bfloat16 for p in params) and all(
        t.dtype == torch.bfloat16 for s in states for t in s.values())
    assert_same(params, states, ref_params, ref_states, torch.bfloat16)


@pytest.mark.parametrize('case', ['adamw-amsgrad', 'sgd-nesterov-maximize'])
def test_matches_rule_f64_and_f16(case):
    rule, hyper, options = CASES[case]
    assert_same(*run_case(rule, hyper, options, torch.float64), torch.float64)
    assert_same(*run_case(rule, hyper, options, torch.float16, seed=2), torch.float16)


def test_noncontiguous_and_transposed_params_and_state():
    "A parameter that is a strided slice (staged through copies) and a transposed one (read in place)."
    base = torch.randn(8, 6, device=DEVICE)
    sliced = base[:, ::2]             # not dense: updated through a copy, written back into `base`
    transposed = torch.randn(5, 4, device=DEVICE).T  # dense, not contiguous
    params = [sliced, transposed]
    ref = [p.clone() for p in params]
    state = {k: [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
             for k in ('exp_avg', 'exp_avg_sq')}
    ref_state = {k: [t.clone() for t in v] for k, v in state.items()}
    steps = [torch.zeros((), device=DEVICE) for _ in params]
    for t in range(1, 6):
        grads = [torch.randn(8, 3, device=DEVICE), torch.randn(4, 5, device=DEVICE)]
        for s in steps: s += 1
        ts.triton_step('adam_direction', params, grads, state, ADAM, lr=1e-2, steps=steps, weight_decay=0.0,
                       decoupled=False, initial_lr=1e-2, maximize=False)
        for i, (p, g) in enumerate(zip(ref, grads)):
            p.add_(adam_direction(g, state_of(ref_state, i)['exp_avg'], state_of(ref_state, i)['exp_avg_sq'],
                                  step=t, **ADAM), alpha=-1e-2)
    for p, r in zip(params, ref): torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(base[:, ::2], ref[0], rtol=1e-5, atol=1e-6)


def state_of(state, i): return {k: v[i] for k, v in state.items()}


def test_table_is_cached_and_rebuilt_when_storage_moves(monkeypatch):
    p = [torch.randn(10, device=DEVICE), torch.randn(3, device=DEVICE)]
    state = {'exp_avg': [torch.zeros_like(x) for x in p]}
    steps = [torch.zeros((), device=DEVICE) for _ in p]
    call = lambda grads: ts.triton_step('lion_direction', p, grads, state, dict(betas=(0.9, 0.99)), lr=0.1,
                                        steps=steps, weight_decay=0.0, decoupled=True, initial_lr=0.1,
                                        maximize=False)
    plan_of = lambda: ts._plans[id(steps[0]), len(steps)][1]
    call([torch.ones_like(x) for x in p])
    plan = plan_of()
    table = plan.table
    # Finding the plan compares no tensors: bool(a == b) would wait for the GPU, and fail in a graph capture
    compared = []
    monkeypatch.setattr(torch.Tensor, '__eq__', lambda a, b: compared.append((a, b)) or torch.eq(a, b))
    call([torch.ones_like(x) for x in p])            # fresh grads: same plan, same table
    monkeypatch.undo()
    assert not compared
    assert plan_of() is plan and plan.table is table
    p[0].data = p[0].data.clone()                    # storage moved: the table must follow
    before = p[0].clone()
    call([torch.ones_like(x) for x in p])
    assert plan_of() is not plan
    torch.testing.assert_close(p[0], before - 0.1)   # sign(+) steps by lr
    key = id(steps[0]), len(steps)
    del steps[0]                                     # the list's first step tensor dies: its plan goes with it
    assert key not in ts._plans


def test_a_state_list_changed_in_place_is_noticed():
    """`triton_step` keeps the pointer table of the lists it was given. A caller may put a new tensor into the same
    list: the step must update the new tensor, not keep writing to the old one. (The optimizers pass tuples, which
    can't change, so their tensors are compared only once.)"""
    p = [torch.randn(10, device=DEVICE)]
    state = {'exp_avg': [torch.zeros_like(p[0])]}
    steps = [torch.zeros((), device=DEVICE)]
    call = lambda: ts.triton_step('lion_direction', p, [torch.ones_like(p[0])], state, dict(betas=(0.9, 0.99)),
                                  lr=0.1, steps=steps, weight_decay=0.0, decoupled=True, initial_lr=0.1,
                                  maximize=False)
    call()
    old = state['exp_avg'][0]
    kept = old.clone()
    state['exp_avg'][0] = torch.zeros_like(p[0])     # the same list, a new tensor
    call()
    torch.testing.assert_close(old, kept)            # the old buffer is left alone
    torch.testing.assert_close(state['exp_avg'][0], torch.full_like(p[0], 0.01))  # m ← β₂·0 + (1 − β₂)·1


def test_kahan_compensation_matches_its_formula_and_tracks_fp32():
    "x = θ − ηu + e in fp32; θ ← round(x); e ← x − θ. Tiny steps that bf16 alone would lose add up."
    torch.manual_seed(0)
    p32 = torch.ones(300, device=DEVICE)
    p = p32.to(torch.bfloat16)
    plain = p.clone()
    comp = torch.zeros_like(p)
    steps = [torch.zeros((), device=DEVICE)]
    ref_p, ref_e = p.clone(), comp.clone()
    lr = 1e-4  # 100 × smaller than bf16's spacing at 1
    for _ in range(STEPS):
        g = torch.rand(300, device=DEVICE).to(torch.bfloat16)
        steps[0] += 1
        ts.triton_step('sgd_direction', [p], [g], {}, SGD, lr=lr, steps=steps, weight_decay=0.0, decoupled=False,
                       initial_lr=lr, maximize=False, compensation=[comp])
        ts.triton_step('sgd_direction', [plain], [g], {}, SGD, lr=lr, steps=[torch.ones(())], weight_decay=0.0,
                       decoupled=False, initial_lr=lr, maximize=False)
        x = ref_p.float() - lr * g.float() + ref_e.float()
        ref_p = x.to(torch.bfloat16)
        ref_e = (x - ref_p.float()).to(torch.bfloat16)
        p32 -= lr * g.float()
    torch.testing.assert_close(p, ref_p, rtol=0, atol=0)
    torch.testing.assert_close(comp, ref_e, rtol=1e-2, atol=1e-6)
    assert torch.equal(plain, torch.ones_like(plain))  # round-to-nearest never moves
    assert (p.float() + comp.float() - p32).abs().max() < 1e-4


def test_an_optimizer_with_kahan_summation_compensates_at_every_step():
    """Through an optimizer, the Triton step carries the rounding error at every step, not only the first: the
    optimizer's bf16 weights equal the kernel called directly with its compensation buffer, step for step."""
    from modern_updates.optim import SGD as SGDOpt
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.ones(300, device=DEVICE, dtype=torch.bfloat16))
    opt = SGDOpt([param], lr=1e-3, fused=True, kahan_summation=True)
    p, comp, steps = param.detach().clone(), torch.zeros_like(param), [torch.zeros((), device=DEVICE)]
    for _ in range(12):
        param.grad = torch.rand(300, device=DEVICE).to(torch.bfloat16)
        opt.step()
        steps[0] += 1
        ts.triton_step('sgd_direction', [p], [param.grad], {}, SGD, lr=1e-3, steps=steps, weight_decay=0.0,
                       decoupled=False, initial_lr=1e-3, maximize=False, compensation=[comp])
        assert {plan[1] for plan in opt._plans.values()} == {'triton'}
        assert torch.equal(param.detach(), p) and torch.equal(opt.state[param]['compensation'], comp)
    assert not torch.equal(p, torch.ones_like(p))  # the tiny steps added up


def test_stochastic_rounding_is_unbiased_and_reproducible():
    n, lr = 4096, 1e-3  # each update is 1/8 of bf16's spacing at 1 (2^-7)
    def run(seed):
        p = torch.ones(n, device=DEVICE, dtype=torch.bfloat16)
        ts.triton_step('sgd_direction', [p], [-torch.ones_like(p)], {}, SGD, lr=lr, steps=[torch.ones(())],
                       weight_decay=0.0, decoupled=False, initial_lr=lr, maximize=False, stochastic_rounding=True,
                       sr_seed=seed)
        return p
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.float().unique().tolist()) <= {1.0, 1.0 + 2 ** -7}
    up = (a.float() > 1).float().mean().item()
    assert abs(up - 1e-3 / 2 ** -7) < 0.03, up  # P(up) = 0.128


def test_steps_on_host_with_f64_default_and_numpy_lr():
    "Step counters of another dtype (torch follows the default dtype) go through the step buffer."
    import numpy as np
    p = [torch.randn(20, device=DEVICE)]
    ref = [x.clone() for x in p]
    state = {'exp_avg': [torch.zeros(20, device=DEVICE)], 'exp_avg_sq': [torch.zeros(20, device=DEVICE)]}
    ref_state = {k: [v[0].clone()] for k, v in state.items()}
    steps = [torch.zeros((), dtype=torch.float64, device=DEVICE)]
    for t in range(1, 4):
        g = torch.randn(20, device=DEVICE)
        steps[0] += 1
        ts.triton_step('adam_direction', p, [g], state, ADAM, lr=np.array(1e-2), steps=steps, weight_decay=0.0,
                       decoupled=False, initial_lr=None, maximize=False)
        ref[0].add_(adam_direction(g, ref_state['exp_avg'][0], ref_state['exp_avg_sq'][0], step=t, **ADAM),
                    alpha=-1e-2)
    torch.testing.assert_close(p[0], ref[0], rtol=1e-5, atol=1e-6)


def test_available_and_errors():
    assert ts.triton_step_available([torch.zeros(3, device=DEVICE), torch.zeros(2, 2, device=DEVICE)])
    assert ts.triton_step_available([torch.zeros(3, device=DEVICE, dtype=torch.float16)])
    assert not ts.triton_step_available([torch.zeros(3, device=DEVICE, dtype=torch.int32)])
    assert not ts.triton_step_available([torch.zeros(3, device=DEVICE, dtype=torch.complex64)])
    assert not ts.triton_step_available([])
    p = [torch.zeros(3, device=DEVICE)]
    kwargs = dict(lr=0.1, steps=[torch.ones(())], weight_decay=0.0, decoupled=False, initial_lr=0.1, maximize=False)
    with pytest.raises(ValueError, match='momentum_buffer'):
        ts.triton_step('sgd_direction', p, p, {}, SGD | dict(momentum=0.9), **kwargs)
    with pytest.raises(ValueError, match='unknown rule'):
        ts.triton_step('muon_direction', p, p, {}, {}, **kwargs)
    with pytest.raises(ValueError, match='one device and dtype'):
        ts.triton_step('sgd_direction', p + [torch.zeros(2, dtype=torch.float64, device=DEVICE)], p * 2, {}, SGD,
                       **kwargs | dict(steps=[torch.ones(()), torch.ones(())]))


@pytest.mark.skipif(INTERPRETED, reason='compilation is what is counted; the interpreter compiles nothing')
def test_new_learning_rate_does_not_recompile():
    kernel = ts._step_kernel()
    p = [torch.randn(10, device=DEVICE)]
    state = {'exp_avg': [torch.zeros_like(p[0])], 'exp_avg_sq': [torch.zeros_like(p[0])]}
    steps = [torch.zeros((), device=DEVICE)]
    def call(lr):
        steps[0] += 1
        ts.triton_step('adam_direction', p, [torch.randn_like(p[0])], state, ADAM, lr=lr, steps=steps,
                       weight_decay=0.01, decoupled=True, initial_lr=1e-3, maximize=False)
    call(1e-3)
    count = sum(len(c[0]) for c in kernel.device_caches.values())
    for lr in (2e-3, 3e-4, 0.1): call(lr)
    assert sum(len(c[0]) for c in kernel.device_caches.values()) == count


def test_optimizers_fused_match_per_tensor(monkeypatch):
    "End to end, once the optimizer base routes fused=True here: every optimizer, step for step with foreach=False."
    from modern_updates.optim import SGD as SGDOpt, Adagrad, Adam, AdamW, Lion, RMSprop
    calls = []
    step = ts.triton_step
    from modern_updates.optim import kernels  # the step the base finds, as triton_step.py registered it
    monkeypatch.setitem(kernels.KERNEL_STEPS, 'triton', kernels.KERNEL_STEPS['triton']._replace(
        step=lambda *a, **k: (calls.append(a[0]), step(*a, **k))))
    for cls, kw in ((Adam, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
                    (AdamW, dict(lr=1e-2, weight_decay=0.1, maximize=True)),
                    (SGDOpt, dict(lr=1e-2, momentum=0.9, nesterov=True)),
                    (SGDOpt, dict(lr=1e-2, momentum=0.9, ema=True, weight_decay=0.1, decoupled_weight_decay=True)),
                    (Adagrad, dict(lr=1e-2, lr_decay=0.01, initial_accumulator_value=0.1)),
                    (RMSprop, dict(lr=1e-2, momentum=0.9, centered=True)),
                    (Lion, dict(lr=1e-3, weight_decay=0.1))):
        torch.manual_seed(0)
        a = [torch.randn(40, device=DEVICE, requires_grad=True), torch.randn(3, 5, device=DEVICE, requires_grad=True)]
        b = [x.detach().clone().requires_grad_() for x in a]
        try:
            fused = cls(a, fused=True, **kw)
        except (TypeError, ValueError, RuntimeError) as e:
            pytest.skip(f'the optimizer base does not take fused=True yet: {e}')
        plain = cls(b, foreach=False, **kw)
        for _ in range(5):
            for params in (a, b):
                for x in params: x.grad = torch.sin(3 * x.detach()) + 0.1
            fused.step(); plain.step()
        for x, y in zip(a, b): torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
        assert calls and calls[-1] == cls.rule.__name__, f'{cls.__name__}(fused=True) did not take the Triton step'


@pytest.mark.parametrize('case', ['sgd-momentum-dampening-l2', 'adam-schedule-decay-tensor-lr', 'lion'])
def test_a_found_flag_skips_on_the_device(case):
    "`found` = 1 (a nan or inf gradient somewhere) leaves every parameter and buffer as it was; 0 is an ordinary step."
    rule, hyper, options = CASES[case]
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(1100, generator=gen).to(DEVICE), torch.randn(7, generator=gen).to(DEVICE)]
    names = NAMES[rule](hyper)
    states = [make_state(rule, hyper, p, names) for p in params]
    grads = [torch.randn(p.shape, generator=gen).to(DEVICE) for p in params]
    steps = [torch.tensor(3.0, device=DEVICE) for _ in params]
    lr = torch.tensor(0.01, device=DEVICE) if options.get('lr_tensor') else 0.01
    kw = dict(lr=lr, steps=steps, weight_decay=options.get('weight_decay', 0.0),
              decoupled=options.get('decoupled', False), initial_lr=0.02, maximize=False)
    before = [p.clone() for p in params], [{k: v.clone() for k, v in s.items()} for s in states]
    buffers = {k: [s[k] for s in states] for k in names}
    ts.triton_step(rule, params, grads, buffers, hyper, **kw, found=torch.ones((), device=DEVICE))
    for p, b in zip(params, before[0]): assert torch.equal(p, b)
    for s, b in zip(states, before[1]):
        for k in s: assert torch.equal(s[k], b[k])
    ts.triton_step(rule, params, grads, buffers, hyper, **kw, found=torch.zeros((), device=DEVICE))
    plain = [b.clone() for b in before[0]], [{k: v.clone() for k, v in s.items()} for s in before[1]]
    ts.triton_step(rule, plain[0], grads, {k: [s[k] for s in plain[1]] for k in names}, hyper, **kw)
    for p, q in zip(params, plain[0]): assert torch.equal(p, q)
    assert not torch.equal(params[0], before[0][0])


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('case', ['sgd-momentum-dampening-l2', 'rmsprop-centered-momentum', 'adamw-amsgrad', 'lion'])
def test_a_grad_scale_is_divided_out_as_each_gradient_is_read(case, dtype):
    """`grad_scale` (GradScaler's, under AMP): the step equals one on the gradients divided by it, bit for bit in fp32,
    and the gradients are left divided, as torch's fused kernels leave them. A non-contiguous gradient goes through a copy,
    which is written back. With `found` = 1 nothing moves, the gradients included."""
    rule, hyper, options = CASES[case]
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(DEVICE, dtype)
    params = [rand(1100), rand(6, 5), rand(7)]
    names = NAMES[rule](hyper)
    scale = torch.tensor(1000.0, device=DEVICE)  # not a power of two: division rounds
    grads = [rand(1100) * 1000, (rand(5, 6) * 1000).T, rand(7) * 1000]
    kw = dict(hyper=hyper, lr=0.01, weight_decay=options.get('weight_decay', 0.0),
              decoupled=options.get('decoupled', False), initial_lr=0.01, maximize=False)

    initial = [make_state(rule, hyper, p, names) for p in params]

    def step(params, grads, **extra):
        states = [{k: v.clone() for k, v in s.items()} for s in initial]
        steps = [torch.tensor(2.0, device=DEVICE) for _ in params]
        ts.triton_step(rule, params, grads, {k: [s[k] for s in states] for k in names}, steps=steps, **kw, **extra)
        return params, states
    unscaled = [(g.float() / scale).to(dtype) for g in grads]  # correctly rounded, as the kernel divides
    expected = step([p.clone() for p in params], [g.clone() for g in unscaled])
    skipped = step([p.clone() for p in params], kept := [g.clone() for g in grads], grad_scale=scale,
                   found=torch.ones((), device=DEVICE))
    for p, q in zip(skipped[0], params): assert torch.equal(p, q)
    for g, h in zip(kept, grads): assert torch.equal(g, h)
    actual = step([p.clone() for p in params], grads, grad_scale=scale)
    # a bf16 gradient is unscaled in fp32 and used unrounded: close to the rounded one's step, not equal
    same = torch.equal if dtype == torch.float32 else lambda a, b: torch.testing.assert_close(a, b, **TOL[dtype]) or 1
    for p, q in zip(actual[0], expected[0]): assert same(p, q)
    for s, r in zip(actual[1], expected[1]):
        for k in s: assert same(s[k], r[k]), k
    for g, u in zip(grads, unscaled): assert torch.equal(g, u)


def test_grad_scaler_takes_its_fast_path_with_the_triton_step(monkeypatch):
    """Every optimizer on the Triton path tells GradScaler to hand it the scale (`_step_supports_amp_scaling`): no
    unscale_ pass. Under a scaler with an overflowed step, it equals the per-tensor rule under the same scaler."""
    from modern_updates.optim import SGD as SGDOpt, Adagrad, Adam, AdamW, Lion, RMSprop
    calls, original = [], torch.amp.GradScaler.unscale_
    monkeypatch.setattr(torch.amp.GradScaler, 'unscale_', lambda self, opt: (calls.append(opt), original(self, opt))[1])

    def run(make):
        torch.manual_seed(0)
        params = [torch.randn(40, device=DEVICE, requires_grad=True), torch.randn(3, 5, device=DEVICE, requires_grad=True)]
        opt = make(params)
        scaler = torch.amp.GradScaler(DEVICE, init_scale=1000.0, growth_factor=1.5, backoff_factor=0.3, growth_interval=2)
        for t in range(5):
            opt.zero_grad()
            loss = sum((torch.sin(3 * x) * (t + 1)).sum() for x in params) * (float('inf') if t == 2 else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return opt, params
    for cls, kw in ((Adam, dict(lr=1e-2, weight_decay=0.1)), (AdamW, dict(lr=1e-2, weight_decay=0.1)),
                    (SGDOpt, dict(lr=1e-2, momentum=0.9)), (Adagrad, dict(lr=1e-2)),
                    (RMSprop, dict(lr=1e-2, centered=True)), (Lion, dict(lr=1e-3, weight_decay=0.1))):
        calls.clear()
        fused, a = run(lambda ps: cls(ps, fused=True, **kw))
        assert fused._step_supports_amp_scaling and not calls, cls.__name__
        plain, b = run(lambda ps: cls(ps, foreach=False, **kw))
        assert not plain._step_supports_amp_scaling and len(calls) == 5
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
            # unscaled, at points that differ by rounding: cos(3x)'s slope makes that up to 45 times larger
            torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-4)


def test_an_eager_step_reads_nothing_back_from_the_device(monkeypatch):
    """The step counters live on the device, and the kernel reads them there. An eager step that turned one into a
    Python number would wait for the GPU, so the host could not queue the next step while this one runs: on an H200
    that held Adam at 0.74-0.81 of the memory roof at 200 tensors, where the captured step reached 1.06. On a GPU,
    CUDA's sync check says whether the step waits; without one, no step counter may be read on the host."""
    from modern_updates.optim import SGD as SGDOpt, Adagrad, Adam, AdamW, Lion, RMSprop
    for cls, kw in ((Adam, dict(lr=1e-2)), (AdamW, dict(lr=1e-2)), (SGDOpt, dict(lr=1e-2, momentum=0.9)),
                    (Adagrad, dict(lr=1e-2)), (RMSprop, dict(lr=1e-2)), (Lion, dict(lr=1e-3))):
        params = [torch.randn(40, device=DEVICE, requires_grad=True), torch.randn(3, 5, device=DEVICE)]
        for p in params: p.grad = torch.randn_like(p)
        opt = cls(params, fused=True, nonfinite='ignore', **kw)  # the default check reads its flag: a wait by design
        opt.step()                                   # state, plan and kernel
        assert {plan[1] for plan in opt._plans.values()} == {'triton'}, cls.__name__
        if DEVICE == 'cuda':
            torch.cuda.set_sync_debug_mode('error')
            try: opt.step()
            finally: torch.cuda.set_sync_debug_mode(0)
            continue
        read = spy_host_reads(monkeypatch, watched=[opt.state[p]['step'] for p in params])
        opt.step()
        monkeypatch.undo()
        assert not read, (cls.__name__, read)


@pytest.mark.parametrize('kinds', ['triton', 'torch fused'])
def test_parameters_that_skip_steps_keep_one_launch_and_their_plans(monkeypatch, kinds):
    """An expert that gets no tokens has no gradient at that step: the parameters that step change from step to step,
    and their step counts drift apart. The kernels read each tensor's own step, so a group still steps in one launch
    per (device, dtype). No step count is read on the host: each read waited for the GPU, once per parameter at every
    change of subset. Each subset keeps its plan, so neither the batches nor the pointer table are rebuilt at every
    step, and a skipped step (a nan) takes back only the steps of the parameters that were in it. The parameters, their
    step counts and the skipped steps equal the rule's, one tensor at a time."""
    from modern_updates.optim import SGD as SGDOpt, Adagrad, Adam, AdamW, Lion, RMSprop, base, kernels, plan
    cases = [(Adam, dict(lr=1e-2, weight_decay=0.1)), (AdamW, dict(lr=1e-2)),
             (SGDOpt, dict(lr=1e-2, momentum=0.9)), (Adagrad, dict(lr=1e-2))]
    if kinds == 'triton': cases += [(RMSprop, dict(lr=1e-2, centered=True)), (Lion, dict(lr=1e-3))]
    else: monkeypatch.delitem(kernels.KERNEL_STEPS, 'triton')
    fast_update, batch, table = base.UpdateRuleOptimizer._kernel_step, plan.Plans._batch, ts._Plan.__init__
    for cls, kw in cases:
        torch.manual_seed(0)
        start = [torch.randn(30 + i, device=DEVICE) for i in range(6)]
        grads = [torch.randn_like(p) for p in start]
        def step(opt, params, t):  # the odd ones have no gradient at even steps; a nan at step 6
            for i, (p, g) in enumerate(zip(params, grads)):
                p.grad = None if t % 2 == 0 and i % 2 else g * (float('nan') if t == 6 and i == 2 else t + 1)
            opt.step()
        fast, slow = [p.clone() for p in start], [p.clone() for p in start]
        opt = cls(fast, fused=True, nonfinite='skip', **kw)
        ref = cls(slow, foreach=False, nonfinite='skip', **kw)
        for t in range(4):  # the subset first, then all: every plan made once
            step(opt, fast, t)
            step(ref, slow, t)
        assert {plan[1] for plan in opt._plans.values()} == {kinds.split()[-1]}, cls.__name__
        launches, rebuilt = [], []
        monkeypatch.setattr(base.UpdateRuleOptimizer, '_kernel_step',
                            lambda self, *a, **k: launches.append(1) or fast_update(self, *a, **k))
        monkeypatch.setattr(plan.Plans, '_batch', lambda self, *a: rebuilt.append('batch') or batch(self, *a))
        monkeypatch.setattr(ts._Plan, '__init__', lambda self, *a, **k: rebuilt.append('table') or table(self, *a, **k))
        read = spy_host_reads(monkeypatch, watched=[opt.state[p]['step'] for p in fast])
        if DEVICE == 'cuda': torch.cuda.set_sync_debug_mode('error')
        try:
            for t in range(4, 8): step(opt, fast, t)
        finally:
            if DEVICE == 'cuda': torch.cuda.set_sync_debug_mode(0)
            monkeypatch.undo()
        if kinds != 'triton': monkeypatch.delitem(kernels.KERNEL_STEPS, 'triton')
        for t in range(4, 8): step(ref, slow, t)
        assert (len(launches), rebuilt, read) == (4, [], []), cls.__name__
        assert opt.skipped_steps == ref.skipped_steps == 1, cls.__name__
        assert [float(opt.state[p]['step']) for p in fast] == [float(ref.state[p]['step']) for p in slow]
        for a, b in zip(fast, slow):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=cls.__name__)


def test_module_imports_without_triton_being_imported():
    code = ('import sys, modern_updates, modern_updates.optim, modern_updates.optim.triton_step; '
            "assert 'triton' not in sys.modules, 'triton was imported'")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


AOT = r'''
import os, sys
os.environ['TRITON_INTERPRET'] = '0'
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from modern_updates.optim import triton_step as ts
kernel = ts._step_kernel()
signature = dict(table='*i64', grad_table='*i64', block_tensor='*i32', lr_ptr='*fp32', found_ptr='*fp32', scale_ptr='*fp32',
                 lr_value='fp64',
                 weight_decay='fp64', initial_lr='fp64', beta1='fp64', beta2='fp64', eps='fp64', momentum='fp64',
                 dampening='fp64', alpha='fp64', lr_decay='fp64', sr_seed='i32')
variants = [(0, tl.float32, dict(MOMENTUM=True, NESTEROV=True, DECAY=1, MAXIMIZE=True)),
            (1, tl.float16, dict(STEP_DTYPE=tl.float64, ALIGNED=False)),
            (2, tl.float32, dict(CENTERED=True, MOMENTUM=True, DECAY=3, LR_PTR=True, FOUND=True)),
            (3, tl.bfloat16, dict(AMSGRAD=True, KAHAN=True, STOCHASTIC=True, GRAD_SCALE=True)),
            (4, tl.float64, dict())]
for rule, dtype, flags in variants:
    constants = dict(RULE=rule, DTYPE=dtype, COMPUTE=tl.float64 if dtype == tl.float64 else tl.float32,
                     STEP_DTYPE=tl.float32, LR_PTR=False, FOUND=False, GRAD_SCALE=False, DECAY=2, MAXIMIZE=False, MOMENTUM=False, NESTEROV=False,
                     EMA=False, CENTERED=False, AMSGRAD=False, KAHAN=False, STOCHASTIC=False, BITS=tl.int16,
                     ALIGNED=True, BLOCK=1024) | flags
    source = ASTSource(fn=kernel, signature=signature | {k: 'constexpr' for k in constants},
                       constexprs={(kernel.arg_names.index(k),): v for k, v in constants.items()})
    ptx = triton.compile(source, target=GPUTarget('cuda', 90, 32)).asm['ptx']
    if flags.get('ALIGNED', True): assert 'ld.global.v' in ptx, (rule, dtype, 'no vector loads')
print('compiled', len(variants))
'''


def test_kernel_compiles_for_a_gpu_without_one():
    "The compiled path (not the interpreter) builds PTX for an H100 with ptxas, no GPU needed: every rule, some options."
    result = subprocess.run([sys.executable, '-c', AOT], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'})
    if 'ptxas' in result.stderr and 'not found' in result.stderr.lower():
        pytest.skip('no ptxas in this triton install')
    assert result.returncode == 0 and 'compiled 5' in result.stdout, result.stderr[-3000:]
