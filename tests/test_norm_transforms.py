"Issue 11, section 1: the norm layers are exact under every autograd transform, and compile without graph breaks."
import copy

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, jacfwd, jacrev, vmap

from modern_updates.norm import BatchNorm1d, LayerNorm, RMSNorm

PAIRS = {'LayerNorm': (LayerNorm, torch.nn.LayerNorm), 'RMSNorm': (RMSNorm, torch.nn.RMSNorm)}


def make_pair(name, d=6, **kwargs):
    "Ours and torch's with the same random parameters, in float64."
    ours_cls, torch_cls = PAIRS[name]
    torch.manual_seed(0)
    ours = ours_cls(d, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        for p in ours.parameters(): p.normal_()
    theirs = torch_cls(d, dtype=torch.float64, **kwargs)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize('name', PAIRS)
def test_issue_snippet_hessian_is_exact(name):
    "The Hessian of a loss with a residual path through the norm equals torch's (it was off by 11.3 and 9.1)."
    x = torch.randn(6, dtype=torch.float64)
    hess = lambda n: torch.autograd.functional.hessian(lambda z: (n(z) ** 3).sum() + (z ** 2).sum(), x)
    ours, theirs = PAIRS[name]
    assert (hess(ours(6).double()) - hess(theirs(6).double())).abs().max() < 1e-10


@pytest.mark.parametrize('name', PAIRS)
def test_double_backward_hvp_and_gradient_penalty(name):
    ours, theirs = make_pair(name)
    x = torch.randn(3, 6, dtype=torch.float64)
    v = torch.randn_like(x)
    results = []
    for layer in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        gx, = torch.autograd.grad((y.sin() * torch.arange(6.0, dtype=torch.float64)).sum(), xi, create_graph=True)
        hvp, = torch.autograd.grad(gx, xi, v, create_graph=True)           # Hessian-vector product
        penalty = gx.square().sum() + (xi * layer(xi)).sum()               # a gradient penalty and a residual path
        grads = torch.autograd.grad(penalty, [xi, *layer.parameters()])
        results.append([gx, hvp, *grads])
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('name', PAIRS)
def test_gradgradcheck(name):
    ours, _ = make_pair(name, d=5)
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    params = tuple(ours.parameters())
    f = lambda x, *p: functional_call(ours, dict(zip([n for n, _ in ours.named_parameters()], p)), (x,))
    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))


@pytest.mark.parametrize('name', PAIRS)
def test_torch_func_transforms_equal_torch(name):
    ours, theirs = make_pair(name)
    x = torch.randn(4, 6, dtype=torch.float64)
    params = {n: p.detach() for n, p in ours.named_parameters()}
    for transform in [lambda f: vmap(f), lambda f: vmap(jacrev(f)), lambda f: vmap(jacfwd(f)), lambda f: jacrev(f),
                      lambda f: jacfwd(f), lambda f: vmap(grad(lambda z: f(z).pow(3).sum()))]:
        got = transform(lambda z: functional_call(ours, params, (z,)))(x)
        expected = transform(lambda z: functional_call(theirs, params, (z,)))(x)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('name', PAIRS)
def test_per_sample_parameter_gradients(name):
    "vmap over grad with respect to the parameters: per-sample gradients, as Opacus-style code computes them."
    ours, theirs = make_pair(name)
    x = torch.randn(5, 6, dtype=torch.float64)
    params = {n: p.detach() for n, p in ours.named_parameters()}
    per_sample = lambda layer: vmap(grad(lambda p, z: functional_call(layer, p, (z,)).pow(2).sum()), in_dims=(None, 0))
    torch.testing.assert_close(per_sample(ours)(params, x), per_sample(theirs)(params, x))


@pytest.mark.parametrize('name', PAIRS)
def test_forward_mode_ad(name):
    ours, theirs = make_pair(name)
    x, tangent = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    outs = []
    for layer in (ours, theirs):
        with fwAD.dual_level():
            y = layer(fwAD.make_dual(x, tangent))
            outs.append(fwAD.unpack_dual(y))
    torch.testing.assert_close(outs[0].primal, outs[1].primal)
    torch.testing.assert_close(outs[0].tangent, outs[1].tangent)
    # and torch.func.jvp
    jvp = lambda layer: torch.func.jvp(layer, (x,), (tangent,))
    torch.testing.assert_close(jvp(ours), jvp(theirs))


@pytest.mark.parametrize('make', [lambda: LayerNorm(16), lambda: RMSNorm(16), lambda: LayerNorm(16, bias=False),
                                  lambda: BatchNorm1d(16)], ids=['LayerNorm', 'RMSNorm', 'LayerNorm-nobias', 'BatchNorm1d'])
def test_compile_fullgraph(make):
    "torch.compile(fullgraph=True) traces the layers without graph breaks; forward and backward agree with eager."
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = make()
    twin = copy.deepcopy(layer)
    compiled = torch.compile(twin, fullgraph=True, backend='aot_eager')
    x = torch.randn(8, 16) * 3 + 1
    upstream = torch.randn_like(x)
    results = []
    for module in (layer, compiled):
        xi = x.clone().requires_grad_(True)
        y = module(xi)
        y.backward(upstream)
        results.append([y, xi.grad, *[p.grad for p in module.parameters()], *module.buffers()])
    torch.testing.assert_close(results[1], results[0])


def test_compile_graph_has_the_custom_op():
    "The fast kernel stays one opaque op in the graph (its fake implementation gives shapes to the compiler)."
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(LayerNorm(16))(torch.randn(4, 16))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    assert 'modern_updates.last_dims_norm' in str(explanation.graphs[0].graph)


def test_opcheck():
    "torch.library.opcheck: schema, fake implementation and autograd registration are consistent."
    from modern_updates.norm.layernorm import last_dims_norm_fast
    for center in (True, False):
        x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
        w, b = torch.randn(8, dtype=torch.float64, requires_grad=True), torch.randn(8, dtype=torch.float64, requires_grad=True)
        torch.library.opcheck(last_dims_norm_fast, (x, w, b if center else None, 1e-5, center))


@pytest.mark.parametrize('name', PAIRS)
def test_vmap_rule_of_the_operator(name):
    "The operator's own vmap rule (what torch.compile of a vmap uses), with batched inputs and batched parameters."
    from modern_updates.norm.layernorm import last_dims_norm_fast
    center = name == 'LayerNorm'
    torch.manual_seed(0)
    x, w = torch.randn(3, 4, 8), torch.randn(3, 8)
    plain = lambda z, w: getattr(torch.nn, name)(8, elementwise_affine=False, eps=1e-5)(z) * w
    op = lambda z, w: last_dims_norm_fast(z, w, None, 1e-5, center)[0]
    torch.testing.assert_close(torch.vmap(op)(x, w), torch.vmap(plain)(x, w))
    torch.testing.assert_close(torch.vmap(op, in_dims=(None, 0))(x[0], w), torch.vmap(plain, in_dims=(None, 0))(x[0], w))
    torch._dynamo.reset()
    ours, theirs = make_pair(name, d=8)
    compiled = torch.compile(torch.vmap(lambda z: ours(z)), backend='aot_eager', fullgraph=True)
    torch.testing.assert_close(compiled(x.double()), theirs(x.double()))
