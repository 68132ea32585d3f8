"Parity of modern_updates.norm with torch.nn: outputs, gradients, buffers, state_dict interchange, errors, half precision."
import io

import pytest
import torch
from conftest import DEVICES

from modern_updates.norm import BatchNorm1d, BatchNorm2d, LayerNorm, RMSNorm, Transformer, TransformerBlock

BATCH_NORMS = {BatchNorm1d: torch.nn.BatchNorm1d, BatchNorm2d: torch.nn.BatchNorm2d}
BN_SHAPES = {BatchNorm1d: [(16, 5), (8, 5, 7)], BatchNorm2d: [(4, 5, 3, 6)]}
BN_CONFIGS = [dict(), dict(momentum=None), dict(momentum=0.3, eps=1e-3), dict(affine=False),
              dict(track_running_stats=False), dict(affine=False, track_running_stats=False, momentum=None)]


def randomise(module, seed=0):
    "Random parameters and buffers, so that parity is not checked at γ = 1, β = 0 only."
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if t.is_floating_point():
                values = torch.rand(t.shape, generator=gen, dtype=torch.float64) + 0.5 if 'var' in name else torch.randn(t.shape, generator=gen, dtype=torch.float64)
                t.copy_(values)
    return module


def forward_backward(module, x, upstream):
    x = x.detach().clone().requires_grad_(True)
    y = module(x)
    y.backward(upstream)
    return y.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


def assert_same_step(ours, theirs, x, **tol):
    y, gx, gp = forward_backward(ours, x, upstream := torch.randn_like(x))
    y_ref, gx_ref, gp_ref = forward_backward(theirs, x, upstream)
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(gx, gx_ref, **tol)
    torch.testing.assert_close(gp, gp_ref, **tol)
    torch.testing.assert_close(dict(ours.named_buffers()), dict(theirs.named_buffers()), **tol)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('config', BN_CONFIGS, ids=str)
@pytest.mark.parametrize('cls', BATCH_NORMS, ids=lambda c: c.__name__)
def test_batchnorm_parity_train_then_eval(cls, config, dtype, device):
    torch.manual_seed(0)
    ours = randomise(cls(5, device=device, dtype=dtype, **config))
    theirs = BATCH_NORMS[cls](5, device=device, dtype=dtype, **config)
    theirs.load_state_dict(ours.state_dict())
    for shape in BN_SHAPES[cls]:
        for step in range(4):
            assert_same_step(ours, theirs, torch.randn(shape, device=device, dtype=dtype) * 3 + step)
        ours.eval(); theirs.eval()
        assert_same_step(ours, theirs, torch.randn(shape, device=device, dtype=dtype) * 2 - 1)
        ours.train(); theirs.train()
    if ours.track_running_stats: assert ours.num_batches_tracked.item() == 4 * len(BN_SHAPES[cls])


def test_batchnorm_eval_uses_unbiased_running_variance():
    bn = BatchNorm1d(3, momentum=None)
    batches = [torch.randn(10, 3) for _ in range(3)]
    for b in batches: bn(b)
    torch.testing.assert_close(bn.running_var, torch.stack([b.var(0, correction=1) for b in batches]).mean(0))
    torch.testing.assert_close(bn.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))
    bn.eval()
    x = torch.randn(4, 3)
    torch.testing.assert_close(bn(x), (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps))


@pytest.mark.parametrize('cls', BATCH_NORMS, ids=lambda c: c.__name__)
def test_batchnorm_state_dict_both_ways(cls):
    theirs = randomise(BATCH_NORMS[cls](6, momentum=0.2), seed=3)
    theirs.num_batches_tracked.fill_(7)
    ours = cls(6, momentum=0.2)
    ours.load_state_dict(torch.load(io.BytesIO(save(theirs.state_dict()))))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    torch.testing.assert_close(ours.state_dict(), theirs.state_dict())
    back = BATCH_NORMS[cls](6, momentum=0.2)
    back.load_state_dict(torch.load(io.BytesIO(save(ours.state_dict()))))
    torch.testing.assert_close(back.state_dict(), theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]


def save(obj):
    buffer = io.BytesIO(); torch.save(obj, buffer); return buffer.getvalue()


@pytest.mark.parametrize('make, shape, message', [
    (lambda: BatchNorm1d(4), (2, 4, 3, 3), 'got 4 dimensions'),
    (lambda: BatchNorm1d(4), (4,), 'got 1 dimensions'),
    (lambda: BatchNorm2d(4), (2, 4, 3), 'got 3 dimensions'),
    (lambda: BatchNorm1d(4), (8, 3), 'num_features=4'),
    (lambda: BatchNorm2d(4), (2, 5, 3, 3), 'got 5'),
    (lambda: BatchNorm1d(4), (1, 4), 'more than 1 value per channel'),
    (lambda: BatchNorm2d(4), (1, 4, 1, 1), 'more than 1 value per channel'),
    (lambda: BatchNorm1d(4, track_running_stats=False).eval(), (1, 4), 'more than 1 value per channel'),
    (lambda: LayerNorm((3, 4)), (2, 4, 3), 'normalized_shape=(3, 4)'),
    (lambda: LayerNorm(8), (8, 4), 'shape=(8, 4)'),
    (lambda: RMSNorm(8), (2, 7), 'normalized_shape=(8,)'),
])
def test_bad_inputs_are_named(make, shape, message):
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
        make()(torch.randn(shape))


def test_single_example_is_fine_in_eval():
    bn = BatchNorm1d(4).eval()
    torch.testing.assert_close(bn(torch.ones(1, 4)), torch.nn.BatchNorm1d(4).eval()(torch.ones(1, 4)))


@pytest.mark.parametrize('make, message', [
    (lambda: BatchNorm1d(0), 'num_features=0'), (lambda: BatchNorm1d(3.0), 'num_features=3.0'),
    (lambda: BatchNorm2d(3, eps=-1e-5), 'eps=-1e-05'), (lambda: BatchNorm1d(3, momentum=1.5), 'momentum=1.5'),
    (lambda: BatchNorm1d(3, momentum=float('nan')), 'momentum=nan'), (lambda: BatchNorm1d(3, affine=1), 'affine=1'),
    (lambda: BatchNorm1d(3, track_running_stats=None), 'track_running_stats=None'),
    (lambda: LayerNorm(0), 'normalized_shape=0'), (lambda: LayerNorm((4, -1)), r'normalized_shape=\(4, -1\)'),
    (lambda: LayerNorm(4, eps=None), 'eps=None'), (lambda: LayerNorm(4, bias='yes'), "bias='yes'"),
    (lambda: RMSNorm(4, eps=-1.0), 'eps=-1.0'), (lambda: RMSNorm(4, elementwise_affine=0), 'elementwise_affine=0'),
    (lambda: TransformerBlock(10, 3), 'd_model=10 must be a multiple of n_heads=3'),
    (lambda: TransformerBlock(8, 2, placement='middle'), "placement='middle'"),
    (lambda: TransformerBlock(8, 2, norm='batchnorm'), "norm='batchnorm'"),
    (lambda: Transformer(0, 8, 2), 'n_layers=0'),
])
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize('cls', [BatchNorm1d, LayerNorm, RMSNorm], ids=lambda c: c.__name__)
def test_integer_and_complex_inputs_are_refused(cls):
    with pytest.raises(TypeError, match='dtype=torch.int64'): cls(4)(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match='dtype=torch.complex64'): cls(4)(torch.ones(3, 4, dtype=torch.complex64))


LAST_DIMS_CASES = [
    (LayerNorm, torch.nn.LayerNorm, dict()), (LayerNorm, torch.nn.LayerNorm, dict(eps=1e-3, bias=False)),
    (LayerNorm, torch.nn.LayerNorm, dict(elementwise_affine=False)),
    (RMSNorm, torch.nn.RMSNorm, dict()), (RMSNorm, torch.nn.RMSNorm, dict(eps=1e-6)),
    (RMSNorm, torch.nn.RMSNorm, dict(elementwise_affine=False)),
]


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('normalized_shape, shape', [(8, (8,)), (8, (3, 8)), (16, (2, 5, 16)), ((4, 6), (3, 2, 4, 6))], ids=str)
@pytest.mark.parametrize('ours_cls, torch_cls, config', LAST_DIMS_CASES, ids=str)
def test_last_dims_parity(ours_cls, torch_cls, config, normalized_shape, shape, dtype, device):
    torch.manual_seed(0)
    ours = randomise(ours_cls(normalized_shape, device=device, dtype=dtype, **config))
    theirs = torch_cls(normalized_shape, device=device, dtype=dtype, **config)
    theirs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert_same_step(ours, theirs, torch.randn(shape, device=device, dtype=dtype) * 4 + 1)
    assert_same_step(ours.eval(), theirs.eval(), torch.randn(shape, device=device, dtype=dtype))


@pytest.mark.parametrize('ours_cls, torch_cls, config', LAST_DIMS_CASES[:4], ids=str)
def test_last_dims_state_dict_and_noncontiguous(ours_cls, torch_cls, config):
    theirs = randomise(torch_cls(6, **config), seed=2)
    ours = ours_cls(6, **config)
    ours.load_state_dict(torch.load(io.BytesIO(save(theirs.state_dict()))))
    back = torch_cls(6, **config)
    back.load_state_dict(ours.state_dict())
    torch.testing.assert_close(back.state_dict(), theirs.state_dict())
    x = torch.randn(6, 5).t()  # non-contiguous
    assert not x.is_contiguous()
    assert_same_step(ours, theirs, x)


def test_rmsnorm_default_eps_is_the_machine_epsilon():
    tiny = torch.full((2, 4), 1e-5, dtype=torch.float64)
    for dtype in [torch.float32, torch.float64]:
        expected = tiny.to(dtype) / torch.sqrt(tiny.to(dtype).square().mean(-1, keepdim=True) + torch.finfo(dtype).eps)
        torch.testing.assert_close(RMSNorm(4, dtype=dtype)(tiny.to(dtype)), expected)
        torch.testing.assert_close(RMSNorm(4, dtype=dtype)(tiny.to(dtype)), torch.nn.RMSNorm(4, dtype=dtype)(tiny.to(dtype)))
    assert RMSNorm(4).eps is None


HALF_CASES = [(lambda: BatchNorm1d(6), lambda: torch.nn.BatchNorm1d(6), (32, 6)),
              (lambda: BatchNorm2d(6), lambda: torch.nn.BatchNorm2d(6), (4, 6, 5, 5)),
              (lambda: LayerNorm(64), lambda: torch.nn.LayerNorm(64), (32, 64)),
              (lambda: RMSNorm(64), lambda: torch.nn.RMSNorm(64), (32, 64))]


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('half', [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize('make, make_torch, shape', HALF_CASES, ids=['BatchNorm1d', 'BatchNorm2d', 'LayerNorm', 'RMSNorm'])
def test_half_precision_computes_in_float32(make, make_torch, shape, half, device):
    "A float16/bfloat16 input gives the float32 result rounded once to its dtype; gradients likewise."
    torch.manual_seed(0)
    ours, reference = randomise(make().to(device)), make_torch().to(device)
    reference.load_state_dict(ours.state_dict())
    x = (torch.randn(shape, device=device) * 5 + 20).to(half)   # an offset that float16 statistics would blur
    upstream = torch.randn(shape, device=device).to(half)
    y, gx, gp = forward_backward(ours, x, upstream)
    y_ref, gx_ref, gp_ref = forward_backward(reference, x.float(), upstream.float())
    assert y.dtype == half and gx.dtype == half
    # one rounding to the half dtype: within one unit in the last place of the float32 result
    ulp = torch.finfo(half).eps
    torch.testing.assert_close(y.float(), y_ref, rtol=ulp, atol=ulp)
    torch.testing.assert_close(gx.float(), gx_ref, rtol=ulp, atol=ulp * gx_ref.abs().max().item())
    # torch's CUDA kernel for 4-d bfloat16 batches sums the gradients of γ and β with an error of bfloat16's size
    # (3% of one entry of β's gradient on an H200, torch 2.11); ours calls that kernel, as torch's layer does
    loose = device == 'cuda' and half == torch.bfloat16 and len(shape) == 4
    torch.testing.assert_close(gp, gp_ref, **dict(rtol=0.05, atol=0.05) if loose else dict(rtol=1e-5, atol=1e-4))
    torch.testing.assert_close(dict(ours.named_buffers()), dict(reference.named_buffers()))


def test_half_module_parameters():
    ours = LayerNorm(16, dtype=torch.bfloat16)
    x = torch.randn(4, 16, dtype=torch.bfloat16, requires_grad=True)
    ours(x).sum().backward()
    assert ours.weight.grad.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16
    bn = BatchNorm1d(16, dtype=torch.float16)
    bn(torch.randn(4, 16, dtype=torch.float16))
    assert bn.running_var.dtype == torch.float16


@pytest.mark.parametrize('center', [True, False], ids=['LayerNorm', 'RMSNorm'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
def test_fast_kernels_equal_the_reference(center, dtype):
    "The custom op (fast forward and backward) against the book's formula, differentiated by autograd."
    from modern_updates.norm.layernorm import last_dims_norm_fast, last_dims_norm_reference
    torch.manual_seed(0)
    x = (torch.randn(33, 40) * 3 + 2).to(dtype)
    w, b = torch.randn(40, dtype=dtype), torch.randn(40, dtype=dtype)
    upstream = torch.randn(33, 40).to(dtype)
    outs = []
    for f in (lambda *a: last_dims_norm_fast(*a)[0], last_dims_norm_reference):
        inputs = [t.clone().requires_grad_(True) for t in (x, w, b)]
        y = f(inputs[0], inputs[1], inputs[2] if center else None, 1e-5, center)
        y.backward(upstream)
        outs.append([y, *[t.grad for t in inputs[:2 + center]]])
    tol = dict(rtol=2e-2, atol=1e-1) if dtype == torch.bfloat16 else {}  # sums of 33 rounded products
    torch.testing.assert_close(outs[0], outs[1], **tol)


@pytest.mark.parametrize('config', BN_CONFIGS, ids=str)
def test_batchnorm_reference_equals_the_layer(config):
    "The book's `batch_norm` (the reference) against the layer's fast path, torch's kernel, with running statistics."
    from modern_updates.norm.batchnorm import batch_norm
    torch.manual_seed(0)
    layer = randomise(BatchNorm2d(5, **config))
    ref_mean, ref_var = [None if t is None else t.clone() for t in (layer.running_mean, layer.running_var)]
    x = torch.randn(4, 5, 3, 3) * 2 + 1
    factor = (1.0 if config.get('momentum', 0.1) is None else config.get('momentum', 0.1)) if layer.track_running_stats else 0.0
    torch.testing.assert_close(layer(x), batch_norm(x, layer.weight, layer.bias, ref_mean, ref_var, use_batch_stats=True,
                                                    average_factor=factor, eps=layer.eps))
    torch.testing.assert_close(ref_mean, layer.running_mean)
    torch.testing.assert_close(ref_var, layer.running_var)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('placement', ['pre', 'post'])
@pytest.mark.parametrize('norm', ['layernorm', 'rmsnorm'])
def test_transformer_block(norm, placement, device):
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, placement=placement, norm=norm, device=device)
    x = torch.randn(2, 5, 16, device=device, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in block.parameters())
    # the residual and the norm sit where the placement says
    with torch.no_grad():
        a = block.attention
        if placement == 'pre':
            h = x + a(block.norm1(x)); expected = h + block.ffn(block.norm2(h))
        else:
            h = block.norm1(x + a(x)); expected = block.norm2(h + block.ffn(h))
        torch.testing.assert_close(y, expected)
    # attention equals torch's multi-head attention with the same weights
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True, device=device)
    with torch.no_grad():
        mha.in_proj_weight.copy_(a.qkv.weight); mha.in_proj_bias.copy_(a.qkv.bias)
        mha.out_proj.weight.copy_(a.out.weight); mha.out_proj.bias.copy_(a.out.bias)
        torch.testing.assert_close(a(x), mha(x, x, x, need_weights=False)[0])
    stack = Transformer(3, 16, 4, placement=placement, norm=norm, device=device)
    assert len(stack) == 4 and isinstance(stack[-1], torch.nn.Identity) == (placement == 'post')
