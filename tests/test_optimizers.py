"""Every optimizer of the table in optimizer_cases.py against its reference, and against itself."""
import copy
import io
import pickle

import pytest
import torch
from conftest import DEVICES
from optimizer_cases import CASES

CONFIGS = [pytest.param(case, config, id=f'{case.name}-{i}') for case in CASES for i, config in enumerate(case.configs)]
STEPS = 35


def make_params(dtype=torch.float32, device='cpu'):
    "Four parameters, one of them not contiguous."
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(4, 3, generator=g, dtype=dtype), torch.randn(5, generator=g, dtype=dtype),
               torch.randn(6, 4, generator=g, dtype=dtype).t(), torch.randn(3, generator=g, dtype=dtype)]
    params = [t.to(device).requires_grad_() for t in tensors]
    assert not params[2].is_contiguous()
    return params


def param_groups(params, lr):
    "Two groups with their own learning rates."
    return [{'params': params[:2]}, {'params': params[2:], 'lr': lr / 2}]


def compute_grads(params, step):
    "Fill in the gradients of a noisy non-convex loss; the last parameter has none on odd steps."
    for p in params: p.grad = None
    g = torch.Generator().manual_seed(1000 + step)
    used = params if step % 2 == 0 else params[:-1]
    loss = sum(((p - torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device)) ** 2).sum() / 2 + p.sin().sum()
               for p in used)
    loss.backward()


def train(make_opt, params, steps, start=0, scheduler=None):
    opt = make_opt(params)
    sched = scheduler(opt) if scheduler else None
    trace = []
    for t in range(start, start + steps):
        compute_grads(params, t)
        opt.step()
        if sched: sched.step()
        trace.append({k: v for k, v in opt.param_groups[0].items() if k in ('lr', 'momentum', 'betas')})
    return opt, trace


def detached(params): return [p.detach().clone() for p in params]


def assert_all_close(actual, expected, exact=False, **kw):
    for a, e in zip(actual, expected):
        if exact: assert torch.equal(a, e), (a - e).abs().max()
        else: torch.testing.assert_close(a, e, **kw)


# Each path: the per-tensor rule, the same rule on TensorLists, and the default (the fastest available:
# torch's fused kernels for SGD, Adagrad, Adam and AdamW, the foreach path for the others on the CPU).
PATHS = {'single': dict(foreach=False), 'foreach': dict(foreach=True), 'default': {}}


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('case,config', CONFIGS)
def test_matches_reference(case, config, dtype, path, device):
    ours, theirs = make_params(dtype, device), make_params(dtype, device)
    train(lambda ps: case.ours(param_groups(ps, config['lr']), **PATHS[path], **config), ours, STEPS)
    ref_kwargs = case.reference_kwargs(config)
    train(lambda ps: case.reference(param_groups(ps, config['lr']), **ref_kwargs), theirs, STEPS)
    assert_all_close(detached(ours), detached(theirs))


@pytest.mark.parametrize('path', ['foreach', 'default'])
@pytest.mark.parametrize('case,config', CONFIGS)
def test_fast_paths_equal_per_tensor_path(case, config, path, monkeypatch):
    """The rule is the source of truth: the foreach path runs its very lines, bit for bit, once TensorList's
    deferred a / b is turned off; with it (θ + α·a/b as one addcdiv, as torch does) and on the fused kernels,
    the paths agree to rounding."""
    from modern_updates.optim.tensorlist import TensorList
    make = lambda kw: lambda ps: case.ours(param_groups(ps, config['lr']), **kw, **config)
    single, multi = make_params(), make_params()
    train(make(dict(foreach=False)), single, STEPS)
    train(make(PATHS[path]), multi, STEPS)
    assert_all_close(detached(multi), detached(single))
    if path == 'foreach':
        divided = make_params()
        monkeypatch.setattr(TensorList, '__truediv__', lambda a, b: a._new(torch._foreach_div, b))
        train(make(PATHS[path]), divided, STEPS)
        assert_all_close(detached(divided), detached(single), exact=True)


def save_and_load(opt):
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('case,config', CONFIGS)
def test_resume_from_state_dict_is_exact(case, config, dtype):
    make = lambda ps: case.ours(param_groups(ps, config['lr']), **config)
    straight = make_params(dtype)
    train(make, straight, 2 * STEPS)

    resumed = make_params(dtype)
    opt, _ = train(make, resumed, STEPS)
    saved = save_and_load(opt)
    fresh = [p.detach().clone().requires_grad_() for p in resumed]  # a new process would rebuild the parameters
    opt = make(fresh)
    opt.load_state_dict(saved)
    for p in fresh:
        for key, value in opt.state[p].items():
            if key == 'step': assert value.dtype == torch.float32 and value.device.type == 'cpu'
            else: assert value.dtype == p.dtype and value.device == p.device, key
    train(lambda ps: opt, fresh, STEPS, start=STEPS)
    assert_all_close(detached(fresh), detached(straight), exact=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
@pytest.mark.parametrize('case,config', CONFIGS)
def test_state_follows_parameters_to_another_device(case, config):
    make = lambda ps: case.ours(param_groups(ps, config['lr']), **config)
    on_cpu = make_params()
    opt, _ = train(make, on_cpu, STEPS)
    on_gpu = [p.detach().cuda().requires_grad_() for p in on_cpu]
    opt_gpu = make(on_gpu)
    opt_gpu.load_state_dict(save_and_load(opt))
    for p in on_gpu:
        assert all(v.is_cuda for k, v in opt_gpu.state[p].items() if k != 'step')
    train(lambda ps: opt, on_cpu, STEPS, start=STEPS)
    train(lambda ps: opt_gpu, on_gpu, STEPS, start=STEPS)
    assert_all_close([p.cpu() for p in detached(on_gpu)], detached(on_cpu))


@pytest.mark.parametrize('case,config', CONFIGS)
def test_reference_can_resume_from_our_state_dict(case, config):
    "Our checkpoints are in torch's format: the reference optimizer carries on from them."
    ours = make_params()
    opt, _ = train(lambda ps: case.ours(param_groups(ps, config['lr']), **config), ours, STEPS)
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    ref = case.reference(param_groups(theirs, config['lr']), **case.reference_kwargs(config))
    ref.load_state_dict(save_and_load(opt))
    train(lambda ps: opt, ours, STEPS, start=STEPS)
    train(lambda ps: ref, theirs, STEPS, start=STEPS)
    assert_all_close(detached(ours), detached(theirs))


SCHEDULERS = {
    'StepLR': lambda opt, case: torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5),
    'OneCycleLR': lambda opt, case: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=STEPS, cycle_momentum=case.momentum_key is not None),
}


@pytest.mark.parametrize('scheduler', SCHEDULERS)
@pytest.mark.parametrize('case,config', CONFIGS)
def test_schedulers_drive_it_as_they_drive_the_reference(case, config, scheduler):
    if scheduler == 'OneCycleLR' and case.momentum_key == 'momentum' and not config.get('momentum'):
        pytest.skip('OneCycleLR cycles the momentum, and this configuration has none')
    make_sched = lambda opt: SCHEDULERS[scheduler](opt, case)
    ours, theirs = make_params(), make_params()
    _, our_trace = train(lambda ps: case.ours(param_groups(ps, config['lr']), **config), ours, STEPS, scheduler=make_sched)
    _, ref_trace = train(lambda ps: case.reference(param_groups(ps, config['lr']), **case.reference_kwargs(config)),
                         theirs, STEPS, scheduler=make_sched)
    assert our_trace == ref_trace
    if scheduler == 'OneCycleLR' and case.momentum_key:
        assert len({str(t[case.momentum_key]) for t in our_trace}) > 5, 'the momentum was not cycled'
    assert_all_close(detached(ours), detached(theirs))


BAD = [pytest.param(case, kwargs, message, id=f'{case.name}-{message}') for case in CASES for kwargs, message in case.bad]


@pytest.mark.parametrize('case,kwargs,message', BAD)
def test_bad_hyperparameter_is_named(case, kwargs, message):
    with pytest.raises(ValueError, match=f'^{case.name}: ') as info:
        case.ours(make_params(), **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize('case,kwargs,message', BAD)
def test_bad_hyperparameter_in_a_param_group_is_named(case, kwargs, message):
    params = make_params()
    with pytest.raises(ValueError) as info:
        case.ours([{'params': params[:2]}, {'params': params[2:], **kwargs}])
    assert message in str(info.value)


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_bad_params(case):
    with pytest.raises(TypeError, match='single tensor'):
        case.ours(torch.zeros(3, requires_grad=True))
    with pytest.raises(ValueError, match='empty parameter list'):
        case.ours([])
    with pytest.raises(TypeError, match='unexpected keyword'):
        case.ours(make_params(), learning_rate=0.1)


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_sparse_gradient_is_rejected(case):
    if case.ours.supports_sparse: pytest.skip('steps sparse gradients (tests/test_fidelity.py)')
    emb = torch.nn.Embedding(10, 4, sparse=True)
    emb(torch.tensor([1, 3])).sum().backward()
    opt = case.ours(emb.parameters(), **case.configs[0])
    with pytest.raises(RuntimeError, match='sparse gradients'):
        opt.step()


@pytest.mark.parametrize('case,config', CONFIGS)
def test_closure_loss_is_returned_and_params_without_grad_are_untouched(case, config):
    params = make_params()
    frozen = torch.ones(3, requires_grad=True)
    opt = case.ours([{'params': params + [frozen]}], **config)
    def closure():
        compute_grads(params, 0)
        return torch.tensor(1.5)
    assert opt.step(closure).item() == 1.5
    assert torch.equal(frozen.detach(), torch.ones(3)) and frozen not in opt.state
    assert all(int(opt.state[p]['step']) == 1 for p in params)


@pytest.mark.parametrize('case,config', CONFIGS)
def test_deepcopy_and_pickle_keep_working(case, config):
    opt, _ = train(lambda ps: case.ours(ps, **config), make_params(), 3)
    for clone in [copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))]:
        assert clone.state_dict()['param_groups'] == opt.state_dict()['param_groups']
        assert clone.state_dict()['state'].keys() == opt.state_dict()['state'].keys()


# ---- TensorList's deferred quotient: θ.add_(a / b, alpha=α) is one addcdiv ----

def _lists(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (5,), (4, 6)]
    a = [torch.randn(s, generator=g) for s in shapes]
    b = [torch.rand(s, generator=g) + 0.5 for s in shapes]
    theta = [torch.randn(s, generator=g) for s in shapes]
    return theta, a, b


def test_quotient_added_in_place_is_one_addcdiv(monkeypatch):
    from modern_updates.optim.tensorlist import TensorList
    theta, a, b = _lists()
    expected = [t.addcdiv(x, y, value=-0.1) for t, x, y in zip(theta, a, b)]
    def no_division(*args, **kw): raise AssertionError('the quotient was computed')
    monkeypatch.setattr(torch, '_foreach_div', no_division)
    TensorList(theta).add_(TensorList(a) / TensorList(b), alpha=-0.1)
    for t, e in zip(theta, expected): assert torch.equal(t, e)


def test_quotient_read_otherwise_is_the_division():
    from modern_updates.optim.tensorlist import TensorList
    theta, a, b = _lists()
    q = TensorList(a) / TensorList(b)
    assert len(q) == 3
    for t, x, y, got in zip(theta, a, b, q.add(TensorList(theta), alpha=2.0)):
        assert torch.equal(got, x / y + 2.0 * t)
    TensorList(theta).add_(q, alpha=-1.0)  # already computed: an ordinary add
    for t0, x, y, t in zip(_lists()[0], a, b, theta): assert torch.equal(t, t0 - x / y)


def test_quotient_refuses_a_changed_operand():
    "A rule that returns a / b and then changes b would get a silently late division."
    from modern_updates.optim.tensorlist import TensorList
    theta, a, b = _lists()
    q = TensorList(a) / TensorList(b)
    TensorList(b).add_(1.0)
    with pytest.raises(RuntimeError, match='changed a or b in place'):
        TensorList(theta).add_(q, alpha=-0.1)


def test_a_computed_quotient_stays_readable_when_its_operands_change():
    "Once divided, a / b no longer depends on a and b: changing them later is no error, and the quotient keeps its values."
    from modern_updates.optim.tensorlist import TensorList
    theta, a, b = _lists()
    q = TensorList(a) / TensorList(b)
    expected = [x / y for x, y in zip(a, b)]
    for got, e in zip(q.add(TensorList(theta), alpha=0.0), expected): assert torch.equal(got, e)  # computed
    TensorList(a).add_(1.0)
    for got, e in zip(q, expected): assert torch.equal(got, e)
