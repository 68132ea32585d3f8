"""`torch.compile(opt.step)` and `capturable=True`: the step compiles once, as torch.optim's does, and a tensor
learning rate and the step count stay tensors, with no host sync."""
import pytest
import torch
from optimizer_cases import CASES
from test_optimizers import assert_all_close, compute_grads, detached, make_params, param_groups, train
from torch._dynamo.testing import CompileCounter

# the compiled step runs without the hook by which a scheduler checks the order of its calls
pytestmark = pytest.mark.filterwarnings(r'ignore:Detected call of `lr_scheduler\.step\(\)`:UserWarning',
                                        'ignore::DeprecationWarning')

IDS = lambda c: c.name
CONFIGS = [pytest.param(case, config, id=f'{case.name}-{i}') for case in CASES for i, config in enumerate(case.configs)]


def linear_model():
    torch.manual_seed(0)
    return torch.nn.Linear(8, 4)


def compiled(make_opt, **compile_options):
    "`make_opt`, with the optimizer's step replaced by `torch.compile(opt.step, **compile_options)`."
    def make(params):
        torch._dynamo.reset()
        opt = make_opt(params)
        opt.step = torch.compile(opt.step, **compile_options)
        return opt
    return make


def linear_training(make_opt, model, steps, compile=None, frames_at=()):
    """`steps` steps on `model` under StepLR, which changes the lr every other step: through
    `torch.compile(opt.step, **compile)`, or eagerly if `compile` is None. Returns the frames compiled by `frames_at` steps."""
    torch._dynamo.reset()
    opt = make_opt(model.parameters())
    counter = CompileCounter()
    step = opt.step if compile is None else torch.compile(opt.step, backend=counter, **compile)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    seen, g = {}, torch.Generator().manual_seed(0)
    for t in range(1, steps + 1):
        model(torch.randn(16, 8, generator=g)).square().sum().backward()
        step()
        opt.zero_grad()
        scheduler.step()
        if t in frames_at: seen[t] = counter.frame_count
    return seen


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_compiled_step_compiles_as_often_as_torchs(case):
    "torch.optim.Adam compiles twice under a scheduler (a float lr is made dynamic on its first change); so do ours."
    frames = linear_training(lambda ps: case.ours(ps, lr=0.01, nonfinite='ignore'), linear_model(), 16, {},
                             frames_at=(4, 16))
    torch_frames = linear_training(lambda ps: torch.optim.Adam(ps, lr=0.01), linear_model(), 16, {},
                                   frames_at=(16,))
    assert frames[16] == frames[4] <= torch_frames[16] == 2, (frames, torch_frames)


@pytest.mark.parametrize('case', CASES, ids=IDS)
@pytest.mark.parametrize('nonfinite', ['raise', 'skip'])
def test_compiled_step_with_a_nonfinite_check_never_recompiles(case, nonfinite):
    "The check needs the host: one graph break, then no new graph however many steps and learning rates follow."
    frames = linear_training(lambda ps: case.ours(ps, lr=0.01, nonfinite=nonfinite), linear_model(), 24, {},
                             frames_at=(6, 24))
    assert frames[24] == frames[6] <= 6, frames


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_fullgraph_with_a_tensor_lr_capturable_and_clipping(case):
    "No sync anywhere: fullgraph=True would fail on the first `float(lr)`, `int(step)` or `bool(...)`."
    make = lambda lr: lambda ps: case.ours(ps, lr=lr, capturable=True, max_grad_norm=0.5, nonfinite='ignore')
    traced, eager = linear_model(), linear_model()
    frames = linear_training(make(torch.tensor(0.01)), traced, 8, dict(fullgraph=True), frames_at=(8,))
    linear_training(make(0.01), eager, 8)
    assert frames[8] == 1
    assert_all_close(detached(traced.parameters()), detached(eager.parameters()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('case,config', CONFIGS)
def test_compiled_step_equals_eager_step(case, config):
    "Every configuration of the case table, two groups and a missing gradient, traced by dynamo and AOTAutograd."
    make = lambda ps: case.ours(param_groups(ps, config['lr']), **config, nonfinite='ignore')
    traced, eager = make_params(), make_params()
    train(compiled(make, backend='aot_eager'), traced, 6)
    train(make, eager, 6)
    assert_all_close(detached(traced), detached(eager), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_compiled_and_eager_steps_mixed_with_missing_gradients(case):
    """Eagerly, torch's fused kernels read each tensor's step, so a batch may hold parameters at different steps (the
    last one has no gradient at odd steps); compiled, the rule reads one step for its whole batch. Steps that alternate
    between the two must each get the plan they need, not a kept plan made for the other."""
    make = lambda ps: case.ours(ps, lr=0.01, nonfinite='ignore')
    mixed, eager = make_params(), make_params()
    torch._dynamo.reset()
    opt, ref = make(mixed), make(eager)
    compiled_step = torch.compile(opt.step, backend='aot_eager')
    # (the gradients of step t, whether compiled): all, some, all, then all again compiled, ...
    for t, compiled in [(0, True), (1, False), (2, False), (4, True), (5, True), (6, False), (8, True), (9, False)]:
        compute_grads(mixed, t)
        compute_grads(eager, t)
        if compiled:
            for index, group in enumerate(opt.param_groups):  # the plan torch.compile asks for
                opt._init_group(group, index)
                assert all(len({float(s) for s in batch[4]}) == 1 for batch in opt._plans[index][2]), t
            compiled_step()
        else: opt.step()
        ref.step()
    assert_all_close(detached(mixed), detached(eager), rtol=1e-5, atol=1e-6)
    assert [float(opt.state[p]['step']) for p in mixed] == [float(ref.state[p]['step']) for p in eager]


@pytest.mark.parametrize('path', [dict(foreach=False), dict(foreach=True), {}], ids=['single', 'foreach', 'default'])
@pytest.mark.parametrize('case,config', CONFIGS)
def test_capturable_step_equals_the_default_step(case, config, path):
    "capturable=True hands the rules the step as a tensor (and a tensor lr stays one); the update is the same."
    ours, reference = make_params(), make_params()
    opt, _ = train(lambda ps: case.ours(param_groups(ps, torch.tensor(config['lr'])),
                                        **config | path | dict(capturable=True)), ours, 6)
    assert all(s['step'].dim() == 0 for s in opt.state.values())
    train(lambda ps: case.ours(param_groups(ps, config['lr']), **config | path), reference, 6)
    assert_all_close(detached(ours), detached(reference), rtol=1e-5, atol=1e-6)


# ---- CUDA graphs ----

@pytest.mark.parametrize('mode', ['raise', 'skip'])
def test_a_check_inside_a_cuda_graph_capture_is_refused_by_name(mode, monkeypatch):
    "The nan/inf check waits on the host: inside a capture it would fail in CUDA, so the optimizer says what to pass."
    import modern_updates.optim.gradients as gradients
    monkeypatch.setattr(gradients, '_capturing', lambda params: True)
    params = make_params()
    opt = CASES[0].ours(params, lr=0.01, nonfinite=mode)
    compute_grads(params, 0)
    with pytest.raises(RuntimeError, match=rf"nonfinite='{mode}' reads .* CUDA graph capture .*nonfinite='ignore'"):
        opt.step()
    CASES[0].ours(params, lr=0.01, nonfinite='ignore').step()  # no check: nothing to refuse


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
@pytest.mark.parametrize('mode', ['ignore', 'skip'])
@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_a_captured_step_replays_as_the_eager_step(case, mode):
    """capturable=True and a tensor lr: the step captures into a CUDA graph and replays equal to eager. With 'skip',
    the Triton step and torch's fused kernels skip a nan batch on the device, inside the graph."""
    def run(captured):
        torch.manual_seed(0)
        params = [torch.randn(64, 32, device='cuda', requires_grad=True), torch.randn(32, device='cuda', requires_grad=True)]
        for p in params: p.grad = torch.zeros_like(p)
        opt = case.ours(params, lr=torch.tensor(0.01, device='cuda'), capturable=True, nonfinite=mode)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3): opt.step()  # warm up: state created, kernels compiled
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        if captured:
            with torch.cuda.graph(graph): opt.step()
        g = torch.Generator(device='cuda').manual_seed(1)
        for i in range(5):
            for p in params: p.grad.copy_(torch.randn(p.shape, device='cuda', generator=g))
            if mode == 'skip' and i == 2: params[0].grad[0, 0] = float('nan')
            graph.replay() if captured else opt.step()
        torch.cuda.synchronize()
        assert opt.skipped_steps == (mode == 'skip')
        return [p.detach().clone() for p in params]
    assert_all_close(run(captured=True), run(captured=False), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_the_speed_benchmark_times_a_captured_step():
    "`make bench-speed` on a GPU adds the captured step's time; it raises if the graph moved nothing."
    from modern_updates.benchmark import speed
    for name in speed.OPTIMIZERS:
        assert speed.time_captured(name, (4, 1000), torch.device('cuda'), steps=2, rounds=1) > 0
