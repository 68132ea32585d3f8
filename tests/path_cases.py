"""Generated cases for the differential test of every path (test_paths.py, test_triton_paths.py).

A case is a parameter list that a training script can meet: any shape (0-d and empty included), several dtypes in one
group, complex values, parameters that are strided slices, transposed or channels_last, gradients set by hand in
another layout than their parameter's (or expanded, or sparse), and parameters that have no gradient at some steps.
hypothesis draws them; each optimizer steps them on a path, and the result must equal the same steps on plain
contiguous copies by the per-tensor rule (`foreach=False`), and by torch.optim's for-loop where torch has the optimizer.
"""
import math

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from modern_updates.optim import SGD, Adagrad, Adam, AdamW, Lion, RMSprop

# Derandomized: CI meets the same cases at every run; a failure prints the case to reproduce it.
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# optimizer: (keyword sets, torch's counterpart or None). Each keyword set is one torch also takes, unless marked ours.
OPTIMIZERS = {
    SGD: ([dict(lr=0.1), dict(lr=0.05, momentum=0.9, weight_decay=0.01),
           dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True), dict(lr=0.05, momentum=0.8, dampening=0.3)],
          torch.optim.SGD),
    Adagrad: ([dict(lr=0.1), dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
               dict(lr=0.05, maximize=True, eps=1e-6)], torch.optim.Adagrad),
    RMSprop: ([dict(lr=0.01), dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01),
               dict(lr=0.01, alpha=0.9, maximize=True)], torch.optim.RMSprop),
    Adam: ([dict(lr=0.01), dict(lr=0.01, amsgrad=True, weight_decay=0.01),
            dict(lr=0.01, betas=(0.8, 0.99), maximize=True, weight_decay=0.1, decoupled_weight_decay=True)],
           torch.optim.Adam),
    AdamW: ([dict(lr=0.01), dict(lr=0.01, amsgrad=True, weight_decay=0.1, maximize=True)], torch.optim.AdamW),
    Lion: ([dict(lr=1e-3), dict(lr=1e-3, betas=(0.95, 0.98), weight_decay=0.1, maximize=True)], None),
}
# The optimizers with a torch fused kernel (on the CPU), and those whose rule steps sparse gradients.
TORCH_FUSED = (SGD, Adagrad, Adam, AdamW)
SPARSE = (SGD, Adagrad)
STEPS = 3

PARAM_LAYOUTS = ['contiguous', 'permuted', 'gapped', 'channels_last']
GRAD_LAYOUTS = ['as backward makes it', 'contiguous', 'permuted', 'gapped', 'expanded']
FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
LOW = (torch.bfloat16, torch.float16)


@st.composite
def tensor_specs(draw, sparse_ok, complex_ok):
    "One parameter: its shape, dtype, layout, its gradients' layout, and the steps at which it has none."
    dims = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=dims, max_size=dims)))
    if dims and draw(st.integers(0, 9)) == 0: shape = shape[:-1] + (0,)  # empty
    dtype = draw(st.sampled_from(FLOATS + [torch.complex64] * complex_ok))
    layouts = [l for l in PARAM_LAYOUTS if l != 'channels_last' or dims == 4]
    layout = draw(st.sampled_from(layouts)) if dims else 'contiguous'
    grad_layout = draw(st.sampled_from(GRAD_LAYOUTS)) if dims else 'contiguous'
    if sparse_ok and dims == 2 and dtype in (torch.float32, torch.float64) and draw(st.integers(0, 3)) == 0:
        grad_layout = 'sparse'
    order = draw(st.permutations(range(dims)))
    skips = draw(st.sets(st.integers(1, STEPS - 1), max_size=1))  # never the first step: state starts there
    return dict(shape=shape, dtype=dtype, layout=layout, grad_layout=grad_layout, order=order, skips=skips)


def cases(sparse_ok=False, complex_ok=True):
    return st.lists(tensor_specs(sparse_ok, complex_ok), min_size=1, max_size=5)


def draw_case(data, opt_class, **kinds):
    "A drawn case for `opt_class`: its parameter specs, and one of its keyword sets."
    specs = data.draw(cases(**kinds), label='parameters')
    return specs, data.draw(st.sampled_from(OPTIMIZERS[opt_class][0]), label='keywords')


def _laid_out(values, layout, order):
    "A tensor equal to `values`, laid out in memory as `layout` says."
    if layout == 'contiguous' or values.dim() == 0: return values.clone()
    if layout == 'channels_last': return values.clone(memory_format=torch.channels_last)
    if layout == 'permuted':  # stored in another order of dimensions, then viewed back
        inverse = sorted(range(len(order)), key=order.__getitem__)
        return values.permute(*order).contiguous().permute(*inverse)
    if layout == 'gapped':  # every other element of a larger tensor
        wide = values.new_zeros(*values.shape[:-1], 2 * values.shape[-1])
        wide[..., ::2] = values
        return wide[..., ::2]
    raise ValueError(layout)


def _values(shape, dtype, g, device):
    "Values drawn on the CPU (the same on every device), then moved to `device`."
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if dtype.is_complex: x = torch.complex(x, torch.randn(shape, generator=g, dtype=torch.float64))
    return x.to(dtype).to(device)


def gradient(spec, param, g):
    "The gradient of one step, in the spec's layout (set by hand, as gradient transfer does)."
    values = _values(spec['shape'], spec['dtype'], g, param.device)
    layout = spec['grad_layout']
    if layout == 'as backward makes it': return torch.empty_like(param).copy_(values)
    if layout == 'expanded' and values.numel():  # one value broadcast: strides of 0, read-only
        return values.reshape(-1)[:1].reshape((1,) * values.dim()).expand(values.shape)
    if layout == 'sparse': return values.masked_fill(values.abs() < 0.7, 0).to_sparse()
    return _laid_out(values, layout if layout != 'expanded' else 'contiguous', spec['order'])


def make(specs, plain=False, device='cpu'):
    "The parameters of a case (as plain contiguous tensors if `plain`), with the same values every time."
    g = torch.Generator().manual_seed(0)
    params = []
    for spec in specs:  # a spec may name its own device: several devices in one group
        values = _values(spec['shape'], spec['dtype'], g, spec.get('device', device))
        layout = 'contiguous' if plain else spec['layout']
        params.append(torch.nn.Parameter(_laid_out(values, layout, spec['order'])))
    return params


def run(make_opt, specs, plain=False, device='cpu'):
    "STEPS steps of the optimizer on the case's parameters: their values after them, the optimizer, the parameters."
    params = make(specs, plain, device)
    opt = make_opt(params)
    g = torch.Generator().manual_seed(1)
    for t in range(1, STEPS + 1):
        for spec, p in zip(specs, params):
            grad = gradient(spec, p, g)  # drawn even when skipped: the same gradients in every run
            if plain and grad.layout == torch.strided: grad = grad.contiguous()
            p.grad = None if t in spec['skips'] else grad
        opt.step()
    return [p.detach().clone() for p in params], opt, params


def groups(params, config):
    "One group, or two with their own learning rates when there are several parameters."
    if len(params) < 2: return [{'params': params}]
    return [{'params': params[::2]}, {'params': params[1::2], 'lr': config['lr'] / 2}]


# float16 is compared only with the same arithmetic: Adam's rule in float16 divides by √v + ε where ε = 1e-8 and
# small squares underflow to 0 (inf, as torch's for-loop), while the kernels compute in float32.
def tolerance(dtype):
    "How far two arithmetics may round apart in a few steps; a parameter updated wrongly moves by about 1."
    if dtype in LOW: return dict(rtol=0.05, atol=0.05)
    if dtype == torch.float64: return dict(rtol=1e-9, atol=1e-10)
    return dict(rtol=1e-4, atol=1e-5)  # float32, complex64


def assert_equal_runs(actual, expected, specs, arithmetic='other', what=''):
    """Each parameter equal to its reference: to the bit (`arithmetic='exact'`), within torch's default tolerance of
    its dtype ('same': the same operations, in another memory order), or within `tolerance` ('other')."""
    for i, (a, e, spec) in enumerate(zip(actual, expected, specs)):
        message = lambda m: f'{what}: parameter {i} {spec}: {m}'
        if arithmetic == 'exact': torch.testing.assert_close(a, e, rtol=0, atol=0, msg=message)
        elif arithmetic == 'same':  # low precision: a rounding per step may differ by one unit
            torch.testing.assert_close(a, e, msg=message, equal_nan=True,
                                       **tolerance(spec['dtype']) if a.dtype in LOW else {})
        elif spec['dtype'] != torch.float16:  # see `tolerance`
            torch.testing.assert_close(a, e, **tolerance(spec['dtype']), msg=message)
