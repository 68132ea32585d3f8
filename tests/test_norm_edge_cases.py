"Issue 11, section 3: edge cases where ours and torch's could differ: empty batches, eps = 0, huge inputs, autocast."
import pytest
import torch
from torch import nn

from modern_updates.norm import BatchNorm1d, BatchNorm2d, LayerNorm, RMSNorm


@pytest.mark.parametrize('cls, shape', [(BatchNorm1d, (0, 4)), (BatchNorm1d, (0, 4, 3)), (BatchNorm2d, (0, 4, 3, 3))],
                         ids=str)
@pytest.mark.parametrize('training', [True, False])
def test_empty_batch_gives_torch_s_empty_result(cls, shape, training):
    ours, theirs = cls(4).train(training), getattr(nn, cls.__name__)(4).train(training)
    x = torch.randn(shape, requires_grad=True)
    y, y_ref = ours(x), theirs(x)
    assert y.shape == y_ref.shape == shape
    y.sum().backward()
    assert x.grad.shape == shape
    torch.testing.assert_close(ours.state_dict(), theirs.state_dict())


def test_zero_eps_is_correct_on_a_constant_batch():
    "With ε = 0 a constant channel has x̂ = 0 (the limit as ε → 0), so the output is β, not NaN."
    bn = BatchNorm1d(2, eps=0.0)
    with torch.no_grad(): bn.bias.copy_(torch.tensor([0.5, -2.0]))
    x = torch.cat([torch.full((7, 1), 0.3), torch.randn(7, 1)], 1).requires_grad_(True)
    y = bn(x)
    torch.testing.assert_close(y[:, 0], torch.full((7,), 0.5))
    varying = x[:, 1].detach()
    torch.testing.assert_close(y[:, 1] + 2.0, (varying - varying.mean()) / varying.std(correction=0))
    y.pow(2).sum().backward()
    assert x.grad.isfinite().all() and bn.weight.grad.isfinite().all()
    assert bn.running_var[0] == 0.9 * 1 + 0.1 * 0 and bn.running_mean.isfinite().all()
    with pytest.raises(ValueError, match='eps=-0.1'): BatchNorm2d(2, eps=-0.1)
    with pytest.raises(ValueError, match='eps=-1e-05'): LayerNorm(2, eps=-1e-5)


@pytest.mark.parametrize('cls', [LayerNorm, RMSNorm], ids=lambda c: c.__name__)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_huge_finite_inputs(cls, dtype):
    "Inputs up to the dtype's maximum: the right answer (a norm is scale-invariant), where x² overflows."
    torch.manual_seed(0)
    x = torch.randn(5, 16, dtype=torch.float64)
    big = torch.finfo(dtype).max
    layer = cls(16, eps=1e-5, dtype=dtype)
    expected = cls(16, eps=1e-5, dtype=torch.float64)(x).detach()
    tol = dict(rtol=2e-2, atol=2e-2) if dtype in (torch.bfloat16, torch.float16) else dict(rtol=1e-5, atol=1e-5)
    for scale in [big / x.abs().max().item() * 0.99, big ** 0.75, big ** 0.5]:
        xs = (x * scale).to(dtype).requires_grad_(True)
        assert xs.isfinite().all()
        y = layer(xs)
        torch.testing.assert_close(y.double(), expected, **tol)
        y.backward(torch.ones_like(y))
        assert xs.grad.isfinite().all() and layer.weight.grad.isfinite().all()
        layer.zero_grad()


def test_issue_example_huge_layernorm():
    x = torch.tensor([[1e30, 2e30, 3e30]])
    torch.testing.assert_close(LayerNorm(3)(x), torch.tensor([[-1.2247449, 0.0, 1.2247449]]))
    assert nn.LayerNorm(3)(x).isnan().all() or (nn.LayerNorm(3)(x) == 0).all(), 'torch overflows here'


@pytest.mark.parametrize('center', [True, False], ids=['LayerNorm', 'RMSNorm'])
def test_huge_input_gradients_scale(center):
    "∂/∂x of a scale-invariant map at c·x is the gradient at x divided by c, also where (c·x)² overflows."
    from modern_updates.norm.layernorm import last_dims_norm_fast
    torch.manual_seed(0)
    x, g = torch.randn(4, 32), torch.randn(4, 32)
    grads = []
    for c in (1.0, 2.0 ** 100):
        xc = (x * c).requires_grad_(True)
        last_dims_norm_fast(xc, None, None, 0.0, center)[0].backward(g)
        grads.append(xc.grad * c)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('cls', [LayerNorm, RMSNorm], ids=lambda c: c.__name__)
def test_autocast_bfloat16(cls):
    "Under autocast(bf16): torch's dtypes (bf16 output, float32 parameter gradients); ours hold float32 values."
    torch.manual_seed(0)
    torch_cls = getattr(nn, cls.__name__)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        h = nn.Linear(64, 64)(torch.randn(32, 64)).detach()
    assert h.dtype == torch.bfloat16
    grads, outputs = {}, {}
    for name, norm in [('ours', cls(64)), ('torch', torch_cls(64))]:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outputs[name] = y = norm(h)
        grads[name] = torch.autograd.grad(y.float().pow(2).sum(), norm.weight)[0]
    assert outputs['ours'].dtype == outputs['torch'].dtype == torch.bfloat16
    assert grads['ours'].dtype == grads['torch'].dtype == torch.float32
    norm32 = torch_cls(64)   # the float32 computation on the same input and upstream gradient
    exact = torch.autograd.grad(norm32(h.float()), norm32.weight, 2 * outputs['ours'].float())[0]
    errors = {name: (grads[name] - exact).abs().max().item() for name in ('ours', 'torch')}
    assert errors['ours'] < 1e-3 and errors['ours'] <= errors['torch'] + 1e-4, errors
