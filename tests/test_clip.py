"""modern_updates.clip against torch.nn.utils, and the optimizers' clipping keywords against calling it by hand."""
import math

import pytest
import torch
from conftest import DEVICES
from optimizer_cases import CASES

from modern_updates.clip import clip_grad_norm_, clip_grad_value_

NORM_TYPES = [1.0, 2.0, 3.0, 0.5, float('inf')]
DTYPE_SETS = {'f32': [torch.float32], 'f64': [torch.float64], 'mixed': [torch.float32, torch.float64, torch.bfloat16, torch.float16]}


def make_params(dtypes, device='cpu', seed=0, scale=1.0):
    "Nine parameters of several shapes and dtypes; one has no gradient, one a non-contiguous gradient."
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (7,), (2, 3, 4), (), (5, 6), (1,), (3, 3), (8,), (2, 2)]
    params = []
    for i, shape in enumerate(shapes):
        dtype = dtypes[i % len(dtypes)]
        p = torch.zeros(shape, dtype=dtype, device=device, requires_grad=True)
        if i != 5:
            p.grad = (scale * 10 ** (i % 3 - 1) * torch.randn(shape, generator=g)).to(dtype=dtype, device=device)
        params.append(p)
    params[2].grad = torch.randn(4, 3, 2, generator=g).to(dtype=dtypes[2 % len(dtypes)], device=device).transpose(0, 2)
    assert not params[2].grad.is_contiguous()
    return params


def assert_same_grads(ours, theirs, rtol=0.0):
    "Equal bit for bit by default (NaN where NaN); `rtol` allows the last-bit rounding of mixed dtypes."
    for p, q in zip(ours, theirs):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None: torch.testing.assert_close(p.grad, q.grad, rtol=rtol, atol=0, equal_nan=True)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('foreach', [None, False, True])
@pytest.mark.parametrize('dtypes', DTYPE_SETS)
@pytest.mark.parametrize('norm_type', NORM_TYPES)
@pytest.mark.parametrize('max_norm', [0.1, 1e6])  # clipping, and a no-op
def test_clip_grad_norm_equals_torch(max_norm, norm_type, dtypes, foreach, device):
    ours, theirs = make_params(DTYPE_SETS[dtypes], device), make_params(DTYPE_SETS[dtypes], device)
    total = clip_grad_norm_(ours, max_norm, norm_type, foreach=foreach)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type, foreach=foreach)
    assert total.dtype == expected.dtype and total.device == expected.device
    # One dtype: bit for bit. Several: torch sums the per-dtype norms in its hash-map order, we in order of first
    # appearance, so the total may differ in its last bit, and the clipped gradients by one rounding.
    rtol = 0.0 if dtypes != 'mixed' else 1e-14 if max_norm > 1e3 else 1e-2
    torch.testing.assert_close(total, expected, rtol=rtol, atol=0)
    assert_same_grads(ours, theirs, rtol=rtol if max_norm < 1e3 else 0.0)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('foreach', [None, False, True])
@pytest.mark.parametrize('dtypes', DTYPE_SETS)
@pytest.mark.parametrize('clip_value', [0.0, 0.05, 1.0, math.inf])
def test_clip_grad_value_equals_torch(clip_value, dtypes, foreach, device):
    ours, theirs = make_params(DTYPE_SETS[dtypes], device), make_params(DTYPE_SETS[dtypes], device)
    assert clip_grad_value_(ours, clip_value, foreach=foreach) is None
    torch.nn.utils.clip_grad_value_(theirs, clip_value, foreach=foreach)
    assert_same_grads(ours, theirs)


def test_total_norm_is_the_norm_of_the_concatenated_gradients():
    params = make_params([torch.float64])
    flat = torch.cat([p.grad.flatten() for p in params if p.grad is not None])
    for p in NORM_TYPES:
        ours = make_params([torch.float64])
        torch.testing.assert_close(clip_grad_norm_(ours, 1e9, p), torch.linalg.vector_norm(flat, p))
        assert_same_grads(ours, params)  # below the threshold: untouched
    clipped = make_params([torch.float64])
    clip_grad_norm_(clipped, 0.5)
    norm_after = torch.cat([p.grad.flatten() for p in clipped if p.grad is not None]).norm()
    assert 0.5 - 1e-5 < norm_after <= 0.5


def test_single_tensor_generator_and_no_gradients():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert clip_grad_norm_(p, 1.0).item() == 5.0  # a single tensor, as torch accepts
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8, 0.0]))
    params = make_params([torch.float32])
    theirs = make_params([torch.float32])
    assert torch.equal(clip_grad_norm_((q for q in params), 0.3),  # a generator is read twice
                       torch.nn.utils.clip_grad_norm_(theirs, 0.3))
    assert_same_grads(params, theirs)
    clip_grad_value_((q for q in params), 0.01)
    assert all(q.grad.abs().max() <= 0.01 for q in params if q.grad is not None)
    no_grad = [torch.zeros(2, requires_grad=True)]
    assert clip_grad_norm_(no_grad, 1.0).item() == 0.0 and clip_grad_norm_([], 1.0).item() == 0.0
    clip_grad_value_(no_grad, 1.0)


@pytest.mark.parametrize('call,message', [
    (lambda ps: clip_grad_norm_(ps, -1.0), 'max_norm=-1.0'),
    (lambda ps: clip_grad_norm_(ps, float('nan')), 'max_norm=nan'),
    (lambda ps: clip_grad_norm_(ps, None), 'max_norm=None'),
    (lambda ps: clip_grad_norm_(ps, 1.0, norm_type=0), 'norm_type=0'),
    (lambda ps: clip_grad_norm_(ps, 1.0, norm_type=-2.0), 'norm_type=-2.0'),
    (lambda ps: clip_grad_norm_(ps, 1.0, norm_type=float('nan')), 'norm_type=nan'),
    (lambda ps: clip_grad_value_(ps, -0.1), 'clip_value=-0.1'),
    (lambda ps: clip_grad_value_(ps, float('nan')), 'clip_value=nan'),
    (lambda ps: clip_grad_value_(ps, 'x'), "clip_value='x'"),
])
def test_bad_threshold_is_named_and_gradients_are_untouched(call, message):
    params, untouched = make_params([torch.float32]), make_params([torch.float32])
    with pytest.raises(ValueError, match=f'^clip_grad_(norm|value)_: invalid') as info:
        call(params)
    assert message in str(info.value)
    assert_same_grads(params, untouched)


@pytest.mark.parametrize('foreach', [False, True])
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_norm(bad, foreach):
    params, theirs = make_params([torch.float32]), make_params([torch.float32])
    for ps in (params, theirs): ps[0].grad[1, 1] = bad
    with pytest.raises(RuntimeError, match='non-finite|is (nan|inf)'):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True, foreach=foreach)
    with pytest.raises(RuntimeError, match='non-finite'):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True, foreach=foreach)
    assert_same_grads(params, theirs)  # neither touched the gradients
    total = clip_grad_norm_(params, 1.0, foreach=foreach)  # torch's default: scale by the non-finite norm anyway
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0, foreach=foreach)
    torch.testing.assert_close(total, expected, equal_nan=True)
    assert_same_grads(params, theirs)


def test_foreach_true_on_an_unsupported_device_is_refused():
    p = torch.zeros(2, device='meta', requires_grad=True)
    p.grad = torch.zeros(2, device='meta')
    with pytest.raises(RuntimeError, match="can't use the foreach API on meta"):
        clip_grad_value_([p], 1.0, foreach=True)


# ---- the optimizers' keywords ----

def train(case, config, clip_by_hand, steps=6, **clip_keywords):
    "A few steps on large gradients; with clip_by_hand, how many steps the manual clipping changed a gradient."
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(4, 3, generator=g).requires_grad_(), torch.randn(5, generator=g).requires_grad_()]
    groups = [{'params': params[:1]}, {'params': params[1:], 'lr': config['lr'] / 2}]
    opt = case.ours(groups, **config, **({} if clip_by_hand else clip_keywords))
    clipped_steps = 0
    for t in range(steps):
        opt.zero_grad()
        data = torch.Generator().manual_seed(100 + t)
        sum(((p - torch.randn(p.shape, generator=data)) ** 2).sum() * 50 for p in params).backward()
        if clip_by_hand:
            before = [p.grad.clone() for p in params]
            if 'max_grad_value' in clip_keywords: clip_grad_value_(params, clip_keywords['max_grad_value'])
            if 'max_grad_norm' in clip_keywords: clip_grad_norm_(params, clip_keywords['max_grad_norm'])
            clipped_steps += any(not torch.equal(b, p.grad) for b, p in zip(before, params))
        opt.step()
    return [p.detach() for p in params], clipped_steps


@pytest.mark.parametrize('clip', [dict(max_grad_norm=0.5), dict(max_grad_value=0.2), dict(max_grad_value=0.2, max_grad_norm=0.5)],
                         ids=lambda c: '+'.join(c))
@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_optimizer_keyword_equals_clipping_by_hand(case, clip):
    config = case.configs[-1]
    with_keyword, _ = train(case, config, clip_by_hand=False, **clip)
    by_hand, clipped_steps = train(case, config, clip_by_hand=True, **clip)
    assert clipped_steps == 6, 'the gradients were large enough to be clipped at every step'
    for a, b in zip(with_keyword, by_hand): assert torch.equal(a, b)
