"Issue 11, section 4: the Triton LayerNorm/RMSNorm kernels against the reference; on the CPU under TRITON_INTERPRET=1."
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ['TRITON_INTERPRET'] = '1'  # before triton is imported: run the kernels in Triton's interpreter
triton = pytest.importorskip('triton')

from modern_updates.norm.layernorm import last_dims_norm_reference  # noqa: E402
from modern_updates.norm import triton_kernels  # noqa: E402

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
if DEVICE == 'cpu' and os.environ.get('TRITON_INTERPRET') != '1':
    pytest.skip('triton was imported before TRITON_INTERPRET=1 could be set', allow_module_level=True)


def reference(x, weight, bias, eps, center, upstream):
    "Output and gradients of the book's formula, by autograd."
    inputs = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, weight, bias)]
    y = last_dims_norm_reference(inputs[0], inputs[1], inputs[2], eps, center)
    grads = torch.autograd.grad(y, [t for t in inputs if t is not None], upstream)
    return y, grads


@pytest.mark.parametrize('shape', [(5, 33), (9, 64), (3, 128)], ids=str)
@pytest.mark.parametrize('center', [True, False], ids=['LayerNorm', 'RMSNorm'])
@pytest.mark.parametrize('affine', ['weight+bias', 'weight', 'none'])
@pytest.mark.parametrize('programs', [1, 2, 4])
def test_kernels_equal_the_reference(shape, center, affine, programs):
    torch.manual_seed(0)
    x = torch.randn(shape, device=DEVICE) * 3 + 1
    weight = torch.randn(shape[1], device=DEVICE) if affine != 'none' else None
    bias = torch.randn(shape[1], device=DEVICE) if affine == 'weight+bias' and center else None
    upstream = torch.randn(shape, device=DEVICE)
    y, mean, r = triton_kernels.norm_forward(x, weight, bias, 1e-5, center)
    grad_x, grad_weight, grad_bias = triton_kernels.norm_backward(upstream, x, weight, 1e-5, center, programs=programs)
    y_ref, grads_ref = reference(x, weight, bias, 1e-5, center, upstream)
    torch.testing.assert_close(y, y_ref)
    got = [grad_x] + ([grad_weight] if weight is not None else []) + ([grad_bias] if bias is not None else [])
    torch.testing.assert_close(got, list(grads_ref), rtol=1e-4, atol=1e-4)
    x64 = x.double()
    torch.testing.assert_close(mean.squeeze(1), x64.mean(-1).float() if center else torch.zeros_like(mean.squeeze(1)))
    var = x64.var(-1, correction=0) if center else x64.square().mean(-1)
    torch.testing.assert_close(r.squeeze(1), (var + 1e-5).rsqrt().float())


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize('center', [True, False], ids=['LayerNorm', 'RMSNorm'])
def test_half_precision_computes_in_float32(dtype, center):
    torch.manual_seed(0)
    x = (torch.randn(6, 48, device=DEVICE) * 4 + 2).to(dtype)
    weight = torch.randn(48, device=DEVICE).to(dtype)
    upstream = torch.randn(6, 48, device=DEVICE).to(dtype)
    y, _, _ = triton_kernels.norm_forward(x, weight, None, 1e-5, center)
    grad_x, grad_weight, _ = triton_kernels.norm_backward(upstream, x, weight, 1e-5, center)
    y_ref, (gx_ref, gw_ref) = reference(x.float(), weight.float(), None, 1e-5, center, upstream.float())
    assert y.dtype == dtype and grad_x.dtype == dtype and grad_weight.dtype == torch.float32
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(y.float(), y_ref, rtol=ulp, atol=ulp * y_ref.abs().max().item())
    torch.testing.assert_close(grad_x.float(), gx_ref, rtol=2 * ulp, atol=2 * ulp * gx_ref.abs().max().item())
    torch.testing.assert_close(grad_weight, gw_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('center', [True, False], ids=['LayerNorm', 'RMSNorm'])
def test_huge_inputs(center):
    "Rows near float32's maximum: the kernels rescale before squaring."
    torch.manual_seed(0)
    x = torch.randn(4, 40, device=DEVICE)
    big = x / x.abs().amax(-1, keepdim=True) * 3e38
    upstream = torch.randn_like(x)
    y, _, _ = triton_kernels.norm_forward(big, None, None, 1e-5, center)
    y_small, _, _ = triton_kernels.norm_forward(x, None, None, 0.0, center)
    torch.testing.assert_close(y, y_small, rtol=1e-5, atol=1e-5)
    grad_x, _, _ = triton_kernels.norm_backward(upstream, big, None, 1e-5, center)
    assert grad_x.isfinite().all()


def test_empty_input():
    x = torch.randn(0, 16, device=DEVICE)
    y, mean, r = triton_kernels.norm_forward(x, None, None, 1e-5, True)
    grad_x, grad_weight, grad_bias = triton_kernels.norm_backward(x, x, torch.ones(16, device=DEVICE), 1e-5, True)
    assert y.shape == grad_x.shape == (0, 16) and (grad_weight == 0).all()


@pytest.mark.parametrize('name', ['LayerNorm', 'RMSNorm'])
def test_layers_use_the_kernels(name, monkeypatch):
    "The layers route to the kernels (forced on the CPU under the interpreter) and equal torch's layers."
    from modern_updates import norm
    from modern_updates.norm import layernorm
    calls = []
    if DEVICE == 'cpu':
        monkeypatch.setattr(layernorm, 'on_triton', lambda x: True)
    for kernel in ('norm_forward', 'norm_backward'):
        launch = getattr(triton_kernels, kernel)
        monkeypatch.setattr(triton_kernels, kernel, lambda *a, k=kernel, f=launch: calls.append(k) or f(*a))
    torch.manual_seed(0)
    ours, theirs = getattr(norm, name)(24, device=DEVICE), getattr(torch.nn, name)(24, device=DEVICE)
    with torch.no_grad(): ours.weight.normal_()
    theirs.load_state_dict(ours.state_dict())
    x, upstream = torch.randn(2, 5, 24, device=DEVICE) * 2, torch.randn(2, 5, 24, device=DEVICE)
    outs = []
    for layer in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        y = layer(xi); y.backward(upstream)
        outs.append([y, xi.grad, layer.weight.grad])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    assert calls == ['norm_forward', 'norm_backward'], 'forward and backward went through the Triton kernels'
