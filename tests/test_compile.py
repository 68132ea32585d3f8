"""`torch.compile(opt.step)` and `capturable=True`: the step compiles once, as torch.optim's does, and a tensor
learning rate and the step count stay tensors, with no host sync."""
import pytest
import torch
from optimizer_cases import CASES
from test_optimizers import assert_all_close, compute_grads, detached, make_params, param_groups
from torch._dynamo.testing import CompileCounter

# the compiled step runs without the hook by which a scheduler checks the order of its calls
pytestmark = pytest.mark.filterwarnings('ignore:Detected call of `lr_scheduler.step()`:UserWarning',
                                        'ignore::DeprecationWarning')

IDS = lambda c: c.name
CONFIGS = [pytest.param(case, config, id=f'{case.name}-{i}') for case in CASES for i, config in enumerate(case.configs)]


def linear_model():
    torch.manual_seed(0)
    return torch.nn.Linear(8, 4)


def compiled_training(make_opt, model, steps, fullgraph=False, backend=None, frames_at=()):
    "Train `model` with `torch.compile(opt.step)` under StepLR; return the frame counts seen at `frames_at` steps."
    torch._dynamo.reset()
    opt = make_opt(model.parameters())
    counter = backend or CompileCounter()
    step = torch.compile(opt.step, backend=counter, fullgraph=fullgraph)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)  # a new lr every other step
    seen, g = {}, torch.Generator().manual_seed(0)
    for t in range(1, steps + 1):
        model(torch.randn(16, 8, generator=g)).square().sum().backward()
        step()
        opt.zero_grad()
        scheduler.step()
        if t in frames_at: seen[t] = counter.frame_count
    return seen


def eager_training(make_opt, model, steps):
    opt = make_opt(model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        model(torch.randn(16, 8, generator=g)).square().sum().backward()
        opt.step()
        opt.zero_grad()
        scheduler.step()


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_compiled_step_compiles_as_often_as_torchs(case):
    "torch.optim.Adam compiles twice under a scheduler (a float lr is made dynamic on its first change); so do ours."
    frames = compiled_training(lambda ps: case.ours(ps, lr=0.01, nonfinite='ignore'), linear_model(), 16,
                               frames_at=(4, 16))
    torch_frames = compiled_training(lambda ps: torch.optim.Adam(ps, lr=0.01), linear_model(), 16, frames_at=(16,))
    assert frames[16] == frames[4] <= torch_frames[16] == 2, (frames, torch_frames)


@pytest.mark.parametrize('case', CASES, ids=IDS)
@pytest.mark.parametrize('nonfinite', ['raise', 'skip'])
def test_compiled_step_with_a_nonfinite_check_never_recompiles(case, nonfinite):
    "The check needs the host: one graph break, then no new graph however many steps and learning rates follow."
    frames = compiled_training(lambda ps: case.ours(ps, lr=0.01, nonfinite=nonfinite), linear_model(), 24,
                               frames_at=(6, 24))
    assert frames[24] == frames[6] <= 6, frames


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_fullgraph_with_a_tensor_lr_capturable_and_clipping(case):
    "No sync anywhere: fullgraph=True would fail on the first `float(lr)`, `int(step)` or `bool(...)`."
    make = lambda lr: lambda ps: case.ours(ps, lr=lr, capturable=True, max_grad_norm=0.5, nonfinite='ignore')
    compiled, eager = linear_model(), linear_model()
    frames = compiled_training(make(torch.tensor(0.01)), compiled, 8, fullgraph=True, frames_at=(8,))
    eager_training(make(0.01), eager, 8)
    assert frames[8] == 1
    assert_all_close(detached(compiled.parameters()), detached(eager.parameters()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('case,config', CONFIGS)
def test_compiled_step_equals_eager_step(case, config):
    "Every configuration of the case table, two groups and a missing gradient, traced by dynamo and AOTAutograd."
    config = config | dict(nonfinite='ignore')
    compiled, eager = make_params(), make_params()
    torch._dynamo.reset()
    opt = case.ours(param_groups(compiled, config['lr']), **config)
    step = torch.compile(opt.step, backend='aot_eager')
    for t in range(6):
        compute_grads(compiled, t)
        step()
    opt = case.ours(param_groups(eager, config['lr']), **config)
    for t in range(6):
        compute_grads(eager, t)
        opt.step()
    assert_all_close(detached(compiled), detached(eager), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('path', [dict(foreach=False), dict(foreach=True), {}], ids=['single', 'foreach', 'default'])
@pytest.mark.parametrize('case,config', CONFIGS)
def test_capturable_step_equals_the_default_step(case, config, path):
    "capturable=True hands the rules the step as a tensor (and a tensor lr stays one); the update is the same."
    ours, reference = make_params(), make_params()
    opt = case.ours(param_groups(ours, torch.tensor(config['lr'])), **config | path | dict(capturable=True))
    for t in range(6):
        compute_grads(ours, t)
        opt.step()
    assert all(s['step'].dim() == 0 for s in opt.state.values())
    opt = case.ours(param_groups(reference, config['lr']), **config | path)
    for t in range(6):
        compute_grads(reference, t)
        opt.step()
    assert_all_close(detached(ours), detached(reference), rtol=1e-5, atol=1e-6)
