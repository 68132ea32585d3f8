"""Faithful to torch.optim in what a user's code relies on: keywords, checkpoints, group keys, sparse and complex
parameters, non-finite gradients and the messages of bad hyper-parameters."""
import copy

import numpy as np
import pytest
import torch
from conftest import DEVICES, spy_host_reads
from optimizer_cases import CASES
from test_optimizers import assert_all_close, compute_grads, detached, make_params, param_groups, save_and_load, train

from modern_updates.optim import SGD, Adagrad, Adam, AdamW

IDS = lambda c: c.name
FUSED = {'SGD', 'Adagrad', 'Adam', 'AdamW'}  # torch has a fused kernel for their update


def reference_for(case, config):
    "The reference optimizer, or ours on the per-tensor path where there is none with complex support (Lion)."
    if case.name == 'Lion': return lambda ps: case.ours(param_groups(ps, config['lr']), foreach=False, **config)
    return lambda ps: case.reference(param_groups(ps, config['lr']), **case.reference_kwargs(config))


# ---- torch's keywords ----

@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_torch_keywords_are_accepted(case):
    config = case.configs[-1]
    ours, theirs = make_params(), make_params()
    train(lambda ps: case.ours(ps, fused=False, capturable=False, differentiable=False, **config), ours, 5)
    train(lambda ps: case.ours(ps, **config), theirs, 5)
    assert_all_close(detached(ours), detached(theirs))
    with pytest.raises(NotImplementedError, match='differentiable=True is not supported.*torch.optim'):
        case.ours(make_params(), differentiable=True)
    with pytest.raises(ValueError, match='fused=True and foreach=True'):
        case.ours(make_params(), fused=True, foreach=True)


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_fused_true_uses_torch_kernels_or_says_why_not(case):
    for config in case.configs:
        fused, single = make_params(), make_params()
        make = lambda ps, **kw: case.ours(param_groups(ps, config['lr']), **kw, **config)
        if case.name not in FUSED or config.get('ema'):
            with pytest.raises(RuntimeError, match='fused=True, but torch has no fused kernel'):
                train(lambda ps: make(ps, fused=True), fused, 1)
            continue
        opt, _ = train(lambda ps: make(ps, fused=True), fused, 20)
        assert opt._plans and all(plan[1] == 'fused' for plan in opt._plans.values())
        train(lambda ps: make(ps, foreach=False), single, 20)
        assert_all_close(detached(fused), detached(single))


def test_torchs_fused_kernels_are_taken_only_where_this_torch_has_them(monkeypatch):
    """Where torch's dispatcher has no CUDA kernel for a fused op, a GPU without Triton must take the rule, not crash in
    torch's kernel. (torch 2.11 does have a CUDA `_fused_adagrad_`, checked on an H200; only `torch.optim.Adagrad`
    refuses `fused=True` there. The test stands in for a torch without one.)"""
    from types import SimpleNamespace
    from modern_updates.optim import Adagrad, kernels
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    op = {'sgd_direction': '_fused_sgd_', 'adagrad_direction': '_fused_adagrad_', 'adam_direction': '_fused_adam_'}
    for rule, entry in kernels.TORCH_FUSED.items():
        assert ('cuda' in entry.devices) == has(f'aten::{op[rule.__name__]}', 'CUDA') and 'cpu' in entry.devices
    params = make_params()
    opt = Adagrad(params, lr=0.1)
    group = opt.param_groups[0]
    assert kernels.fused_gap(opt.rule, group, params) is None
    entry = kernels.TORCH_FUSED[opt.rule]
    monkeypatch.setitem(kernels.TORCH_FUSED, opt.rule, entry._replace(devices={'cpu'}))  # no CUDA kernel
    on_gpu = [SimpleNamespace(device=torch.device('cuda'))]  # the device is all the check reads first
    assert kernels.fused_gap(opt.rule, group, on_gpu) == "torch has no fused kernel for adagrad_direction on ['cuda']"


# ---- param groups and checkpoints ----

@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_extra_group_keys_are_kept(case):
    "timm's layer-wise decay puts lr_scale in each group; torch keeps such keys, in state_dict too."
    params = make_params()
    opt = case.ours([{'params': params[:2], 'lr_scale': 0.5}, {'params': params[2:], 'lr_scale': 1.0}], lr=0.01)
    compute_grads(params, 0)
    opt.step()
    saved = save_and_load(opt)
    assert [g['lr_scale'] for g in saved['param_groups']] == [0.5, 1.0]
    fresh = case.ours([{'params': params[:2]}, {'params': params[2:]}], lr=0.01)
    fresh.load_state_dict(saved)
    assert [g['lr_scale'] for g in fresh.param_groups] == [0.5, 1.0]


@pytest.mark.parametrize('path', [dict(foreach=False), dict(foreach=True), {}], ids=['single', 'foreach', 'default'])
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_old_checkpoint_with_a_number_step_loads_and_steps(case, path):
    "torch < 1.12 saved state['step'] as a Python number; torch converts it on load."
    config = case.configs[-1]
    make = lambda ps: case.ours(param_groups(ps, config['lr']), **path, **config)
    straight = make_params()
    train(make, straight, 10)
    resumed = make_params()
    opt, _ = train(make, resumed, 5)
    saved = save_and_load(opt)
    for s in saved['state'].values(): s['step'] = int(s['step'])
    opt = make(resumed)
    opt.load_state_dict(saved)
    assert all(torch.is_tensor(s['step']) and s['step'].dtype == torch.float32 for s in opt.state.values())
    train(lambda ps: opt, resumed, 5, start=5)
    assert_all_close(detached(resumed), detached(straight))


@pytest.mark.parametrize('path', [dict(foreach=False), dict(foreach=True), {}], ids=['single', 'foreach', 'default'])
@pytest.mark.parametrize('dampening', [0.0, 0.3])
def test_sgd_momentum_turned_on_later_starts_from_the_gradient(dampening, path):
    "A momentum warm-up: torch starts the buffer from the gradient when momentum first becomes non-zero."
    def run(make):
        params = make_params()
        opt = make(params)
        for t in range(12):
            if t == 4:
                for g in opt.param_groups: g['momentum'] = 0.9
            compute_grads(params, t)
            opt.step()
        return detached(params)
    ours = run(lambda ps: SGD(param_groups(ps, 0.05), lr=0.05, dampening=dampening, **path))
    theirs = run(lambda ps: torch.optim.SGD(param_groups(ps, 0.05), lr=0.05, dampening=dampening))
    assert_all_close(ours, theirs)


@pytest.mark.parametrize('source', ['ours', 'torch'])
def test_adamw_loading_an_adam_checkpoint_stays_decoupled(source):
    "torch's test_adamw_serialization: AdamW keeps decoupled weight decay, Adam takes it from an AdamW checkpoint."
    adam, adamw = (Adam, AdamW) if source == 'ours' else (torch.optim.Adam, torch.optim.AdamW)
    model = torch.nn.Linear(5, 5)
    new = Adam(model.parameters())
    new.load_state_dict(adamw(model.parameters()).state_dict())
    assert new.param_groups[0]['decoupled_weight_decay'] is True
    adam_state = adam(model.parameters()).state_dict()
    assert adam_state['param_groups'][0]['decoupled_weight_decay'] is False
    new = AdamW(model.parameters())
    new.load_state_dict(adam_state)
    assert new.param_groups[0]['decoupled_weight_decay'] is True
    # and it steps as AdamW does
    ours, theirs = make_params(), make_params()
    opt = AdamW(ours, lr=0.01, weight_decay=0.5)
    opt.load_state_dict(adam(ours, lr=0.01, weight_decay=0.5).state_dict())
    train(lambda ps: opt, ours, 5)
    train(lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.5), theirs, 5)
    assert_all_close(detached(ours), detached(theirs))


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_step_follows_the_default_dtype(case):
    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        for path in (dict(foreach=False), dict(foreach=True), {}):
            opt, _ = train(lambda ps: case.ours(ps, **path, **case.configs[0]), make_params(torch.float64), 2)
            assert {s['step'].dtype for s in opt.state.values()} == {torch.float64}
        if case.name != 'Lion':
            ref, _ = train(lambda ps: case.reference(ps, **case.configs[0]), make_params(torch.float64), 2)
            assert {s['step'].dtype for s in ref.state.values() if 'step' in s} <= {torch.float64}
    finally:
        torch.set_default_dtype(before)
    opt, _ = train(lambda ps: case.ours(ps, **case.configs[0]), make_params(), 2)
    assert {s['step'].dtype for s in opt.state.values()} == {torch.float32}


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_numpy_and_tensor_learning_rates(case):
    config = {k: v for k, v in case.configs[-1].items() if k != 'lr'}
    lr = case.configs[-1]['lr']
    expected = make_params()
    train(lambda ps: case.ours(ps, lr=lr, **config), expected, 5)
    for value in (np.array(lr), np.float64(lr), torch.tensor(lr)):
        for path in (dict(foreach=False), dict(foreach=True), {}):
            ours = make_params()
            train(lambda ps: case.ours(ps, lr=value, **path, **config), ours, 5)
            assert_all_close(detached(ours), detached(expected))


# ---- sparse gradients and complex parameters ----

SPARSE = [(SGD, torch.optim.SGD, dict(lr=0.1)), (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
          (SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
          (Adagrad, torch.optim.Adagrad, dict(lr=0.1)),
          (Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.2, maximize=True))]


@pytest.mark.parametrize('ours,theirs,config', SPARSE, ids=lambda x: getattr(x, '__name__', None) or str(x))
def test_sparse_gradients_match_torch(ours, theirs, config):
    "nn.Embedding(sparse=True): each step touches a few rows, the case AdaGrad was written for."
    def run(make):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(20, 4, sparse=True)
        opt = make(emb.parameters())
        for t in range(12):
            opt.zero_grad()
            rows = torch.randint(0, 20, (6,), generator=torch.Generator().manual_seed(t))
            (emb(rows) ** 2).sum().backward()
            assert emb.weight.grad.is_sparse
            opt.step()
        return [emb.weight.detach()]
    assert_all_close(run(lambda ps: ours(ps, **config)), run(lambda ps: theirs(ps, **config)))


def test_sparse_gradients_refused_where_torch_refuses_them():
    emb = torch.nn.Embedding(5, 2, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(ValueError, match='weight_decay=0.1'):
        Adagrad(emb.parameters(), weight_decay=0.1).step()
    with pytest.raises(RuntimeError, match='one tensor at a time'):
        SGD(emb.parameters(), fused=True).step()
    with pytest.raises(RuntimeError, match='Adam does not support sparse gradients'):
        Adam(emb.parameters()).step()


def make_complex_params():
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(4, 3, dtype=torch.complex64, generator=g), torch.randn(5, generator=g),
               torch.randn(6, 4, dtype=torch.complex64, generator=g).t(), torch.randn(3, dtype=torch.complex64, generator=g)]
    return [t.requires_grad_() for t in tensors]


def train_complex(make_opt, params, steps):
    opt = make_opt(params)
    for t in range(steps):
        for p in params: p.grad = None
        g = torch.Generator().manual_seed(100 + t)
        loss = sum((p - torch.randn(p.shape, dtype=p.dtype, generator=g)).abs().pow(2).sum() for p in params)
        loss.backward()
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize('path', [dict(foreach=False), dict(foreach=True), {}], ids=['single', 'foreach', 'default'])
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_complex_parameters_step_as_their_real_views(case, path):
    for config in case.configs:
        ours = train_complex(lambda ps: case.ours(param_groups(ps, config['lr']), **path, **config),
                             make_complex_params(), 12)
        theirs = train_complex(reference_for(case, config), make_complex_params(), 12)
        assert_all_close(ours, theirs)
        assert ours[0].is_complex()


# ---- non-finite gradients ----

def nan_step(opt, params, t, bad=float('nan')):
    compute_grads(params, t)
    params[2].grad[1, 1] = bad
    opt.step()


@pytest.mark.parametrize('clip', [{}, dict(max_grad_norm=1.0), dict(max_grad_value=0.5)], ids=['plain', 'norm', 'value'])
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_nonfinite_gradient_raises_by_default_naming_the_group(case, clip):
    params = make_params()
    opt, _ = train(lambda ps: case.ours(param_groups(ps, case.configs[-1]['lr']), **clip, **case.configs[-1]), params, 2)
    before = copy.deepcopy(opt.state_dict()), detached(params)
    for bad in (float('nan'), float('inf')):
        with pytest.raises(RuntimeError, match=r"parameter 0 \(shape \(4, 6\)\) in param group 1 .*nonfinite='skip'"):
            nan_step(opt, params, 2, bad)
    assert_all_close(detached(params), before[1], exact=True)
    assert_all_close([s for st in opt.state_dict()['state'].values() for s in st.values()],
                     [s for st in before[0]['state'].values() for s in st.values()], exact=True)


@pytest.mark.parametrize('clip', [{}, dict(max_grad_norm=1.0), dict(max_grad_value=0.5)], ids=['plain', 'norm', 'value'])
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_nonfinite_skip_leaves_params_and_state_untouched_and_counts(case, clip):
    config = case.configs[-1]
    make = lambda ps: case.ours(param_groups(ps, config['lr']), nonfinite='skip', **clip, **config)
    params = make_params()
    opt = make(params)
    nan_step(opt, params, 0)  # even the first step: no state is created
    assert not opt.state and opt.skipped_steps == 1
    assert_all_close(detached(params), detached(make_params()), exact=True)
    train(lambda ps: opt, params, 4, start=1)
    state = copy.deepcopy(opt.state_dict()['state'])
    nan_step(opt, params, 5, float('inf'))
    assert opt.skipped_steps == 2
    for key, s in opt.state_dict()['state'].items():
        assert_all_close(list(s.values()), list(state[key].values()), exact=True)
    train(lambda ps: opt, params, 3, start=6)
    # the run equals one that never saw the bad batches
    reference = make_params()
    ref_opt, _ = train(make, reference, 4, start=1)
    train(lambda ps: ref_opt, reference, 3, start=6)
    assert_all_close(detached(params), detached(reference), exact=True)
    # the count is saved with the checkpoint
    fresh = make(make_params())
    fresh.load_state_dict(save_and_load(opt))
    assert fresh.skipped_steps == 2


@pytest.mark.parametrize('clip', [{}, dict(max_grad_norm=1.0), dict(max_grad_value=0.5)], ids=['plain', 'norm', 'value'])
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_capturable_skip_needs_no_host(case, clip, monkeypatch):
    """capturable=True, nonfinite='skip': torch's fused kernels (and the Triton step) take the nan/inf flag on the device,
    so nothing waits on the host; the rule's paths ask the host. Either way the run equals one without the bad batches."""
    import modern_updates.optim.gradients as gradients
    config = case.configs[-1]
    make = lambda ps: case.ours(param_groups(ps, config['lr']), nonfinite='skip', capturable=True, **clip, **config)
    flags = []  # the found_inf each fused kernel got
    for name in ('_fused_sgd_', '_fused_adagrad_', '_fused_adam_', '_fused_adamw_'):
        kernel = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, kernel=kernel, **kw: flags.append(kw['found_inf']) or kernel(*a, **kw))
    monkeypatch.setattr(gradients, '_has_nonfinite', lambda ts: pytest.fail('the host check ran'))
    params, reference = make_params(), make_params()
    opt = make(params)
    train(lambda ps: opt, params, 2)
    nan_step(opt, params, 2)
    nan_step(opt, params, 3, float('inf'))
    train(lambda ps: opt, params, 3, start=4)
    ref_opt, _ = train(make, reference, 2)
    train(lambda ps: ref_opt, reference, 3, start=4)
    assert_all_close(detached(params), detached(reference), exact=True)
    assert [float(s['step']) for s in opt.state.values()] == [float(s['step']) for s in ref_opt.state.values()]
    assert opt.skipped_steps == 2 and isinstance(opt.param_groups[0]['skipped_steps'], torch.Tensor)
    fused = {path for _, path, _ in opt._plans.values()} == {'fused'}
    assert fused == (case.name in FUSED)
    assert all(flag is not None for flag in flags) and bool(flags) == fused
    fresh = make(make_params())
    fresh.load_state_dict(save_and_load(opt))
    assert fresh.skipped_steps == 2


@pytest.mark.parametrize('mode', ['raise', 'skip'])
def test_with_max_grad_norm_the_norm_is_the_check(mode, monkeypatch):
    "The norm's pass finds nan and inf: no second read of the gradients, and a bad batch's gradients stay as they were."
    import modern_updates.optim.gradients as gradients
    reads = []
    monkeypatch.setattr(gradients, '_has_nonfinite', lambda ts, real=gradients._has_nonfinite: reads.append(1) or real(ts))
    params = make_params()
    opt = Adam(params, lr=0.01, max_grad_norm=1.0, nonfinite=mode)
    compute_grads(params, 0)
    opt.step()
    assert reads == []  # finite gradients: the norm alone
    compute_grads(params, 1)
    params[2].grad[1, 1] = float('nan')
    grads = [p.grad.clone() for p in params if p.grad is not None]
    if mode == 'raise':
        with pytest.raises(RuntimeError, match='nan or inf'): opt.step()
    else:
        opt.step()
        assert opt.skipped_steps == 1
    torch.testing.assert_close([p.grad for p in params if p.grad is not None], grads, equal_nan=True, rtol=0, atol=0)  # not scaled by nan


def test_an_overflowing_norm_of_finite_gradients_is_not_a_nan():
    "Finite gradients whose squares overflow make the norm inf; they are clipped as torch clips them, not refused."
    ours, theirs = make_params(), make_params()
    for params in (ours, theirs):
        compute_grads(params, 0)
        params[0].grad.fill_(1e30)
    Adam(ours, lr=0.01, max_grad_norm=1.0).step()
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    torch.optim.Adam(theirs, lr=0.01).step()
    assert_all_close(detached(ours), detached(theirs))


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_grad_scaler_drives_it_as_it_drives_torch(case):
    """AMP's GradScaler unscales, finds an overflowed step and skips it before our check sees it: the default
    nonfinite='raise' never fires under a scaler, and the run equals the reference's, skipped step included."""
    config = case.configs[-1]
    def run(make):
        params = make_params()
        opt = make(params)
        scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 10, growth_interval=2)
        for t in range(8):
            opt.zero_grad()
            g = torch.Generator().manual_seed(t)
            loss = sum(((p - torch.randn(p.shape, generator=g)) ** 2).sum() for p in params)
            if t == 3: loss = loss * float('inf')  # an overflowed step
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return detached(params), scaler.get_scale()
    (ours, our_scale), (theirs, their_scale) = run(lambda ps: case.ours(param_groups(ps, config['lr']), **config)), \
        run(reference_for(case, config))
    assert our_scale == their_scale == 2.0 ** 12  # grown three times, halved once (step 3)
    assert_all_close(ours, theirs)


AMP_FUSED = [(SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
             (Adagrad, torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.01)),
             (Adam, torch.optim.Adam, dict(lr=0.1, amsgrad=True, weight_decay=0.01)),
             (AdamW, torch.optim.AdamW, dict(lr=0.1, weight_decay=0.1))]


def scaled_history(make, clip_first=False, steps=8):
    """Steps under AMP's GradScaler, the 4th overflowed, with the parameters, gradients and scale after each. The
    scale is odd (1000, times 1.5 or 0.3), so that dividing by it and multiplying by its inverse round differently."""
    params = [p.detach().requires_grad_() for p in make_params()]
    opt = make(params)
    scaler = torch.amp.GradScaler('cpu', init_scale=1000.0, growth_factor=1.5, backoff_factor=0.3, growth_interval=2)
    history = []
    for t in range(steps):
        opt.zero_grad()
        g = torch.Generator().manual_seed(t)
        loss = sum(((p - torch.randn(p.shape, generator=g)) ** 2).sum() for p in params)
        if t == 3: loss = loss * float('inf')
        scaler.scale(loss).backward()
        if clip_first:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        history.append((detached(params), [p.grad.clone() for p in params], scaler.get_scale()))
    return opt, history


@pytest.fixture
def unscale_calls(monkeypatch):
    "The optimizers that GradScaler.unscale_ was called for."
    calls, original = [], torch.amp.GradScaler.unscale_
    monkeypatch.setattr(torch.amp.GradScaler, 'unscale_', lambda self, opt: (calls.append(opt), original(self, opt))[1])
    return calls


@pytest.mark.parametrize('ours,theirs,config', AMP_FUSED, ids=lambda x: getattr(x, '__name__', ''))
def test_grad_scaler_hands_its_scale_to_our_kernels_as_to_torchs(ours, theirs, config, unscale_calls):
    """Where our step runs a kernel that unscales as it reads (torch's fused kernels here, Triton on a GPU), GradScaler
    takes its fast path, as for torch's fused=True: no unscale_ pass and no host sync. The kernels divide each gradient
    by the scale and skip the overflowed step on the device; our default nan check stands aside for the scaler's.
    Every step equals torch's fused optimizer bit for bit, the gradients left unscaled and the scale included."""
    opt, history = scaled_history(lambda ps: ours(ps, **config))
    assert opt._step_supports_amp_scaling and not unscale_calls
    ref_opt, reference = scaled_history(lambda ps: theirs(ps, fused=True, **config))
    # torch 2.11's fused Adagrad does not take the fast path: the scaler multiplies its gradients by 1/scale first,
    # which rounds differently from our division, so there the steps are close rather than equal
    exact = getattr(ref_opt, '_step_supports_amp_scaling', False)
    grads_tolerance = dict(rtol=0, atol=0) if exact else {}
    for (params, grads, scale), (ref_params, ref_grads, ref_scale) in zip(history, reference):
        assert_all_close(params, ref_params, exact=exact)
        assert_all_close(grads, ref_grads, equal_nan=True, **grads_tolerance)  # inf and nan at the overflow
        assert scale == ref_scale
    assert_all_close(history[3][0], history[2][0], exact=True)  # skipped: by the scaler, not counted as ours
    assert opt.skipped_steps == 0
    assert all(int(s['step']) == 7 for s in opt.state.values())
    # a user's unscale_ and clip_grad_norm_ first: the scaler then hands over its flag alone
    _, history = scaled_history(lambda ps: ours(ps, **config), clip_first=True)
    _, reference = scaled_history(lambda ps: theirs(ps, fused=True, **config), clip_first=True)
    for (params, _, scale), (ref_params, _, ref_scale) in zip(history, reference):
        assert_all_close(params, ref_params, exact=True)
        assert scale == ref_scale


@pytest.mark.parametrize('ours,theirs,config', AMP_FUSED, ids=lambda x: getattr(x, '__name__', ''))
def test_in_optimizer_clipping_reads_unscaled_gradients_under_grad_scaler(ours, theirs, config, unscale_calls):
    "max_grad_norm under the fast path unscales first, as a user's unscale_ and clip_grad_norm_ before the step do."
    _, history = scaled_history(lambda ps: ours(ps, max_grad_norm=1.0, **config))
    _, reference = scaled_history(lambda ps: theirs(ps, fused=True, **config), clip_first=True)
    assert len(unscale_calls) == len(reference)  # only the reference's own calls
    for t, ((params, grads, _), (ref_params, ref_grads, _)) in enumerate(zip(history, reference)):
        assert_all_close(params, ref_params)
        if t != 3: assert_all_close(grads, ref_grads)  # at the overflow, clip_grad_norm_ makes its infs nan


@pytest.mark.parametrize('path', [dict(foreach=False), dict(foreach=True), {}], ids=['single', 'foreach', 'default'])
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_a_handed_scale_and_flag_work_on_every_path(case, path):
    """GradScaler's attributes, `grad_scale` and `found_inf`, set by hand on any path: a flag of 1 skips the step, and
    a scale divides the gradients before the rule reads them. The step then equals one on unscaled gradients."""
    config = case.configs[-1] | path
    scaled, plain = make_params(), make_params()
    opt = case.ours(param_groups(scaled, config['lr']), **config)
    reference = case.ours(param_groups(plain, config['lr']), **config)
    for t in range(4):
        compute_grads(scaled, t), compute_grads(plain, t)
        for p in scaled:
            if p.grad is not None: p.grad.mul_(1024.0)
        opt.grad_scale, opt.found_inf = torch.tensor(1024.0), torch.tensor(float(t == 2))
        before = detached(scaled)
        opt.step()
        del opt.grad_scale, opt.found_inf
        if t == 2:
            assert_all_close(detached(scaled), before, exact=True)
            continue
        reference.step()
        assert_all_close(detached(scaled), detached(plain))
        assert_all_close([p.grad for p in scaled if p.grad is not None],
                         [p.grad for p in plain if p.grad is not None], exact=True)


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_a_scale_alone_is_divided_out_and_our_check_still_runs(case):
    "`grad_scale` set without `found_inf`: the gradients are unscaled, then the default check raises on a nan as ever."
    config = case.configs[-1]
    scaled, plain = make_params(), make_params()
    opt = case.ours(param_groups(scaled, config['lr']), **config)
    reference = case.ours(param_groups(plain, config['lr']), **config)
    compute_grads(scaled, 0), compute_grads(plain, 0)
    for p in scaled: p.grad.mul_(1024.0)
    opt.grad_scale = torch.tensor(1024.0)
    opt.step(), reference.step()
    assert_all_close(detached(scaled), detached(plain))
    assert_all_close([p.grad for p in scaled], [p.grad for p in plain], exact=True)
    scaled[1].grad[0] = float('nan')
    with pytest.raises(RuntimeError, match='has nan or inf values'):
        opt.step()

@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_the_check_finds_nan_and_inf_in_every_float_dtype(case, device):
    """bf16, fp16 and fp32 gradients in one optimizer, at the first step and later ones (where the kernels take the
    check's flag). torch's check has no bf16 kernel on CUDA: it crashed there on bf16 gradients."""
    def fresh():
        torch.manual_seed(0)
        return [torch.randn(6, 4, device=device, dtype=dtype, requires_grad=True)
                for dtype in (torch.bfloat16, torch.float16, torch.float32)]
    def grads(params, t, bad=None, at=0):
        for i, p in enumerate(params):
            p.grad = torch.sin(p.detach().float() * (t + 2)).to(p.dtype)
            if i == at and bad is not None: p.grad[1, 2] = bad
    config = case.configs[-1]
    for at in range(3):
        for bad in (float('nan'), float('inf')):
            for first in (True, False):
                params = fresh()
                opt = case.ours(params, **config)
                if not first:
                    for t in range(2): grads(params, t); opt.step()
                before = detached(params)
                grads(params, 2, bad, at)
                with pytest.raises(RuntimeError, match=f'parameter {at} .* has nan or inf values'):
                    opt.step()
                assert_all_close(detached(params), before, exact=True)
        skipping = case.ours(fresh(), nonfinite='skip', **config)
        params = skipping.param_groups[0]['params']
        for t in range(2): grads(params, t); skipping.step()
        grads(params, 2, float('nan'), at)
        before = detached(params)
        skipping.step()
        assert skipping.skipped_steps == 1
        assert_all_close(detached(params), before, exact=True)


@pytest.mark.parametrize('case', [c for c in CASES if c.name in FUSED], ids=IDS)
def test_skip_on_the_kernel_paths_reads_nothing_on_the_host(case, monkeypatch):
    """With nonfinite='skip', where every group steps by a kernel that takes the flag, the step reads nothing back:
    the kernels skip on the device, and skipped_steps counts there. (The first step checks on the host.)"""
    config = case.configs[-1]
    def steps(params, ts, opt=None):  # even steps: every parameter has a gradient, so the plan stays
        opt = opt or case.ours(params, nonfinite='skip', **config)
        for t in ts: compute_grads(params, t); opt.step()
        return opt
    params = make_params()
    opt = steps(params, (0, 2))
    read = spy_host_reads(monkeypatch)
    nan_step(opt, params, 4)
    steps(params, (6, 8), opt)
    monkeypatch.undo()
    assert {plan[1] for plan in opt._plans.values()} == {'fused'}
    assert not read and opt.skipped_steps == 1
    good = make_params()  # the run with a good batch at step 4 differs: the step was skipped, not taken
    assert steps(good, (0, 2, 4, 6, 8)).skipped_steps == 0 and not torch.equal(detached(params)[0], detached(good)[0])
    without = make_params()  # and it equals the run without that batch, bit for bit
    steps(without, (0, 2, 6, 8))
    assert_all_close(detached(params), detached(without), exact=True)


def test_nonfinite_ignore_steps_as_torch_does():
    ours, theirs = make_params(), make_params()
    nan_step(Adam(ours, lr=0.01, nonfinite='ignore'), ours, 0)
    nan_step(torch.optim.Adam(theirs, lr=0.01), theirs, 0)
    torch.testing.assert_close(detached(ours), detached(theirs), equal_nan=True)
    assert detached(ours)[2].isnan().any()


# ---- messages ----

@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_hyperparameter_messages_name_the_value(case):
    with pytest.raises(ValueError) as info:
        case.ours(make_params(), lr=float('inf'))
    assert 'lr=inf' in str(info.value) and 'inf]' not in str(info.value) and 'finite' in str(info.value)
    for bad in (torch.tensor([0.1]), torch.tensor([[0.1]]), torch.tensor([0.1, 0.2])):
        with pytest.raises(ValueError, match=r'invalid lr=tensor\(.*0-d tensor'):
            case.ours(make_params(), lr=bad)
    with pytest.raises(ValueError, match=r'invalid weight_decay=tensor\(\[0.1000\]\)'):
        case.ours(make_params(), weight_decay=torch.tensor([0.1]))
    with pytest.raises(ValueError, match="invalid nonfinite='drop'; expected 'raise' or 'skip' or 'ignore'"):
        case.ours(make_params(), nonfinite='drop')
    opt = case.ours(make_params(), lr=torch.tensor(0.01))  # a 0-d tensor is fine
    opt.param_groups[0]['lr'] = torch.tensor([0.01])        # and a scheduler's bad value is caught at the step
    with pytest.raises(ValueError, match=r'invalid lr=tensor\(\[0.0100\]\)'):
        opt.step()


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_a_value_changed_between_steps_is_checked_again(case):
    """A step checks again only the values that changed since they passed: a new object, or one that can change in
    place (a tensor, a list). Every way of changing a value to a bad one must still be caught at the next step."""
    config = case.configs[-1]
    changes = [  # (how a value is changed after a step, what the message names)
        (lambda g: g.update(lr=-0.5), 'lr=-0.5'),
        (lambda g: g.update(lr=float('nan')), 'lr=nan'),
        (lambda g: g.update(weight_decay=-1.0), 'weight_decay=-1.0'),
        (lambda g: g.update(nonfinite='drop'), "nonfinite='drop'"),
        (lambda g: g['lr'].fill_(-1.0), r'lr=tensor\(-1.\)'),  # a tensor lr, changed in place
    ]
    if 'betas' in config:
        changes += [(lambda g: g.update(betas=(0.9, 1.5)), r'betas=\(0.9, 1.5\)'),
                    (lambda g: g['betas'].__setitem__(1, 2.0), r'betas=\[.*, 2.0\]')]  # a list, in place
    if 'momentum' in config:
        changes.append((lambda g: g.update(momentum=-0.5), 'momentum=-0.5'))
    for change, message in changes:
        params = make_params()
        opt = case.ours(params, **config | dict(lr=torch.tensor(0.01)))
        if 'betas' in config: opt.param_groups[0]['betas'] = list(config['betas'])
        for t in range(2):  # the second step is the one whose values passed
            compute_grads(params, t)
            opt.step()
        before = detached(params)
        change(opt.param_groups[0])
        with pytest.raises(ValueError, match=message):
            opt.step()
        assert_all_close(detached(params), before, exact=True)  # refused before anything moved


# ---- step hooks and the profiler ----

@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_step_hooks_and_the_profiler_see_the_step_as_torchs(case):
    """The step skips torch's wrapper while no hook or profiler needs it (it costs about 25 µs a step). With one, the
    hooks run as torch.optim's do, a pre-hook may replace the step's arguments, and a profiler sees the step's label."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
    step = case.ours.step
    case.ours(make_params())
    assert case.ours.step is step and step.hooked  # torch.optim.Optimizer wraps it no further

    def trace(make):
        params, calls = make_params(), []
        opt = make(params)
        closure = lambda: calls.append('closure') or torch.tensor(1.0)
        handles = [
            register_optimizer_step_pre_hook(lambda o, args, kw: calls.append(('global pre', len(args)))),
            opt.register_step_pre_hook(lambda o, args, kw: calls.append('pre') or ((o, closure), {})),
            opt.register_step_post_hook(lambda o, args, kw: calls.append(('post', args[1] is closure))),
            register_optimizer_step_post_hook(lambda o, args, kw: calls.append('global post'))]
        compute_grads(params, 0)
        loss = opt.step()  # the pre-hook hands it a closure
        for handle in handles: handle.remove()
        calls.append(float(loss))
        compute_grads(params, 1)
        opt.step()         # no hooks left: nothing more is recorded
        return calls, detached(params)
    config = case.configs[-1]
    ours, _ = trace(lambda ps: case.ours(ps, **config))
    theirs, _ = trace(lambda ps: torch.optim.SGD(ps, lr=0.1))  # torch's wrapper, as the reference
    assert ours == theirs == [('global pre', 1), 'pre', 'closure', ('post', True), 'global post', 1.0]
    params = make_params()
    opt = case.ours(params, **config)
    compute_grads(params, 0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    assert f'Optimizer.step#{case.name}.step' in {event.name for event in prof.events()}
