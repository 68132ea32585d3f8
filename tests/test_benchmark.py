"The benchmark: deterministic problems, DeepOBS's quadratic_deep spectrum, the protocol, the records, bad names."
import json
import math
import re

import pytest
import torch

from modern_updates.benchmark import (PROBLEMS, available_optimizers, make_problem, run_benchmark, sample_hparams,
                                      train_run)
from modern_updates.benchmark.problems import GENERATED, LegacyRandomState, quadratic_deep_hessian


def _first_batches(problem, n=3):
    return [t for batch, _ in zip(problem.batches(), range(n)) for t in batch]


@pytest.mark.parametrize('name', list(PROBLEMS))
def test_problem_is_deterministic_for_a_seed(name):
    a, b, c = make_problem(name, seed=5), make_problem(name, seed=5), make_problem(name, seed=6)
    for s, t in zip(a.model.state_dict().values(), b.model.state_dict().values()): assert torch.equal(s, t)
    assert all(torch.equal(s, t) for s, t in zip(_first_batches(a), _first_batches(b)))
    assert not all(torch.equal(s, t) for s, t in zip(_first_batches(a), _first_batches(c)))
    assert a.evaluate('test') == b.evaluate('test')


def test_quadratic_deep_hessian_has_the_specified_spectrum():
    hessian, eigenvalues = quadratic_deep_hessian()
    spectrum = torch.linalg.eigvalsh(hessian)
    torch.testing.assert_close(spectrum, eigenvalues.sort().values, rtol=0, atol=1e-10)
    assert ((spectrum[:90] > 0) & (spectrum[:90] < 1)).all() and ((spectrum[90:] > 30) & (spectrum[90:] < 60)).all()
    problem = make_problem('quadratic_deep')
    assert (problem.batch_size, problem.epochs, problem.num_steps) == (128, 100, 700)
    assert torch.equal(problem.model.theta.detach(), torch.ones(100))


def test_legacy_random_state_matches_numpy():
    np = pytest.importorskip('numpy')
    ours, theirs = LegacyRandomState(42), np.random.RandomState(42)
    assert ours.uniform(0.0, 1.0, 7) == theirs.uniform(0.0, 1.0, 7).tolist()
    assert ours.normal(0.0, 0.6, 5) == theirs.normal(0.0, 0.6, 5).tolist()
    assert ours.normal(size=4) == theirs.normal(size=4).tolist()  # the normal kept from the odd draw comes first


def test_tuned_adam_beats_default_sgd_on_quadratic_deep():
    sgd = train_run('quadratic_deep', 'SGD', {}, seed=1)
    adam = train_run('quadratic_deep', 'Adam', dict(lr=0.02, betas=(0.9, 0.99)), seed=1)
    assert not adam['diverged'] and adam['test'] < sgd['test'] - 3, (adam['test'], sgd['test'])


def test_unknown_names_are_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown problem 'cifar10'; known problems: quadratic_deep, rosenbrock"):
        run_benchmark(['cifar10'])
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; known optimizers: SGD"):
        run_benchmark(['rosenbrock'], ['adam'])
    with pytest.raises(ValueError, match="unknown problem 'x'"): make_problem('x')
    with pytest.raises(ValueError, match="unknown optimizer 'Adamax'"): sample_hparams('Adamax', torch.Generator())


def test_records_are_plain_dicts_in_protocol_order():
    records = run_benchmark(['rosenbrock'], available_optimizers()[:2], budget=2, seeds=2, epochs={'rosenbrock': 1},
                            progress=False)
    assert len(records) == 2 * (2 + 2 * 2)
    keys = {'problem', 'optimizer', 'phase', 'trial', 'hparams', 'seed', 'epochs', 'metric', 'higher_is_better', 'valid',
            'test', 'diverged', 'seconds', 'valid_curve', 'curve_seconds'}
    for r in records:
        assert type(r) is dict and set(r) == keys
        assert r['diverged'] or (math.isfinite(r['test']) and math.isfinite(r['valid']))
    phases = [r['phase'] for r in records[:6]]
    assert phases == ['one-shot', 'one-shot', 'search', 'search', 'tuned', 'tuned']
    assert [r['seed'] for r in records[:6]] == [1, 2, 0, 0, 1, 2]


def test_tuned_runs_use_the_best_trial_even_when_every_trial_diverges():
    from modern_updates.benchmark import benchmark_pair
    records = benchmark_pair('rosenbrock', 'SGD', budget=2, seeds=1, epochs=1, search_seed=0)
    search = [r for r in records if r['phase'] == 'search']
    tuned = [r for r in records if r['phase'] == 'tuned']
    assert tuned and all(r['hparams'] != {} for r in tuned), 'tuned runs are never the defaults'
    best = min(search, key=lambda r: math.inf if r['diverged'] else r['valid'])
    assert all(r['hparams'] == best['hparams'] for r in tuned)


@pytest.mark.parametrize('optimizer', ['SGD', 'AdamWScheduleFree'])
def test_the_committed_results_file_is_what_the_protocol_computes(optimizer):
    "Re-run one (problem, optimizer) pair of the full configuration and compare it with nbs/results/benchmark_full.json."
    from pathlib import Path

    from modern_updates.benchmark import CONFIGS, benchmark_pair, load_results
    meta, records = load_results(Path(__file__).resolve().parents[1] / 'nbs' / 'results' / 'benchmark_full.json')
    assert meta['settings'] == {k: v for k, v in CONFIGS['full'].items()}
    settings = CONFIGS['full']
    ours = benchmark_pair('rosenbrock', optimizer, budget=settings['budget'], seeds=settings['seeds'])
    theirs = [r for r in records if (r['problem'], r['optimizer']) == ('rosenbrock', optimizer)]
    assert {r['optimizer'] for r in records} >= {'Muon', 'AdamWScheduleFree', 'AdamW+WSD'}
    as_json = lambda v: json.loads(json.dumps(v))  # tuples (the betas) become lists, as in the file
    strip = lambda rs: [{k: as_json(v) for k, v in r.items() if k not in ('seconds', 'curve_seconds')} for r in rs]
    def same(a, b):
        if isinstance(a, list) and isinstance(b, list): return len(a) == len(b) and all(map(same, a, b))
        if isinstance(a, float) and isinstance(b, float):  # another CPU's vector units round a little apart
            return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))
        return a == b
    for a, b in zip(strip(ours), strip(theirs), strict=True):
        assert a.keys() == b.keys() and all(same(a[k], b[k]) for k in a), (a, b)
        assert len(b['valid_curve']) == b['epochs'] or b['diverged']  # the file has the validation curves


def test_steps_to_target_reads_the_validation_curve(tmp_path):
    from modern_updates.benchmark.protocol import load_results, save_results, steps_to_target
    record = train_run('mlp', 'Adam', dict(lr=0.01), seed=1, epochs=3)
    steps = [s for s, _ in record['valid_curve']]
    assert steps == [32, 64, 96] and record['valid_curve'][-1][1] == record['valid']
    best = max(v for _, v in record['valid_curve'])
    assert steps_to_target(record, best) == next(s for s, v in record['valid_curve'] if v == best)
    assert steps_to_target(record, 1.01) == math.inf
    diverged = train_run('rosenbrock', 'SGD', dict(lr=1.0), seed=1, epochs=2)
    assert diverged['diverged'] and steps_to_target(diverged, 1e9) == math.inf
    save_results(tmp_path / 'r.json', [record, diverged], {})
    _, (again, again_diverged) = load_results(tmp_path / 'r.json')
    assert again['valid_curve'] == record['valid_curve'] and steps_to_target(again, best) == steps_to_target(record, best)


NEW_OPTIMIZERS = ['Muon', 'AdamWScheduleFree', 'AdamW+WSD']


@pytest.mark.parametrize('problem', GENERATED)  # the real workloads: tests/test_benchmark_real.py
@pytest.mark.parametrize('optimizer', NEW_OPTIMIZERS)
def test_new_optimizers_build_and_train_on_every_problem(problem, optimizer):
    from modern_updates.benchmark import make_optimizer
    assert optimizer in available_optimizers()
    record = train_run(problem, optimizer, {}, seed=1, epochs=1)
    assert not record['diverged'] and math.isfinite(record['test']) and len(record['valid_curve']) == 1
    tuned = train_run(problem, optimizer, sample_hparams(optimizer, torch.Generator().manual_seed(3)), seed=1, epochs=1)
    assert set(tuned['hparams']) == set(sample_hparams(optimizer, torch.Generator()))
    task = make_problem(problem, seed=1, epochs=1)
    before = [p.detach().clone() for p in task.model.parameters()]
    opt = make_optimizer(optimizer, task)
    for batch, _ in zip(task.batches(), range(3)):
        opt.zero_grad()
        task.loss(batch).backward()
        opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, task.model.parameters())), 'the parameters moved'


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    from modern_updates import optim
    from modern_updates.benchmark import make_optimizer
    mlp = make_problem('mlp', seed=1)
    opt = make_optimizer('Muon', mlp.model)
    muon, adamw = opt.optimizers
    assert isinstance(muon, optim.Muon) and isinstance(adamw, optim.AdamW)
    layers = [m for m in mlp.model if isinstance(m, torch.nn.Linear)]
    assert [p for g in muon.param_groups for p in g['params']] == [layers[0].weight, layers[1].weight]
    assert len([p for g in adamw.param_groups for p in g['params']]) == 4  # the head's weight and every bias
    for name in ['quadratic_deep', 'rosenbrock', 'sparse_logreg']:  # no hidden matrix: AdamW on everything
        opt = make_optimizer('Muon', make_problem(name))
        assert [type(o) for o in opt.optimizers] == [optim.AdamW]
    with pytest.raises(TypeError, match='Muon needs the model'): make_optimizer('Muon', list(mlp.model.parameters()))
    # without hidden matrices, Muon's one-shot run is AdamW's, record for record
    a, b = train_run('rosenbrock', 'Muon', {}, seed=2, epochs=2), train_run('rosenbrock', 'AdamW', {}, seed=2, epochs=2)
    assert (a['valid'], a['test'], a['valid_curve']) == (b['valid'], b['test'], b['valid_curve'])


def test_schedule_free_is_evaluated_in_eval_mode(monkeypatch):
    from modern_updates import optim
    from modern_updates.benchmark.problems import Problem
    calls = []
    for hook in ['train', 'eval', 'step']:
        original = getattr(optim.AdamWScheduleFree, hook)
        def spy(self, *args, _hook=hook, _original=original, **kwargs):
            calls.append(_hook)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(optim.AdamWScheduleFree, hook, spy)
    modes = []
    original_evaluate = Problem.evaluate
    def evaluate(self, split):
        opt_mode = calls[-1]
        modes.append((split, opt_mode))
        return original_evaluate(self, split)
    monkeypatch.setattr(Problem, 'evaluate', evaluate)
    record = train_run('rosenbrock', 'AdamWScheduleFree', {}, seed=1, epochs=2)  # 2 epochs of 10 steps
    assert calls[0] == 'train' and calls.count('step') == 20
    assert modes and all(mode == 'eval' for _, mode in modes), modes  # every evaluation right after eval()
    assert [split for split, _ in modes] == ['valid', 'valid', 'valid', 'test']  # two epoch ends, then the record
    assert len(record['valid_curve']) == 2


def test_schedule_free_evaluates_the_average_not_the_training_point():
    from modern_updates.benchmark import make_optimizer
    task = make_problem('rosenbrock', seed=1, epochs=1)
    opt = make_optimizer('AdamWScheduleFree', task, lr=0.01)
    for batch in task.batches():
        opt.zero_grad()
        task.loss(batch).backward()
        opt.step()
    y = task.model.theta.detach().clone()
    opt.eval()
    x = task.model.theta.detach().clone()
    opt.train()
    assert not torch.equal(x, y) and torch.allclose(task.model.theta, y)


def test_wsd_schedule_spans_the_run():
    from modern_updates import optim
    from modern_updates.benchmark import make_optimizer
    task = make_problem('mlp', seed=1)  # 6 epochs of 32 steps
    opt = make_optimizer('AdamW+WSD', task, lr=0.01)
    (adamw,), (wsd,) = opt.optimizers, opt.schedulers
    assert isinstance(adamw, optim.AdamW) and isinstance(wsd, optim.WarmupStableDecay)
    assert (wsd.total_steps, wsd.warmup_steps, wsd.decay_steps) == (task.num_steps, 10, 38) == (192, 10, 38)
    lrs = []
    for batch in task.batches():
        lrs.append(adamw.param_groups[0]['lr'])  # the rate this step uses
        opt.zero_grad()
        task.loss(batch).backward()
        opt.step()
    assert len(lrs) == 192 and lrs[0] == pytest.approx(0.001) and lrs[9] == pytest.approx(0.01)
    assert lrs[10:192 - 38] == [pytest.approx(0.01)] * (192 - 48)
    assert lrs[-2] == pytest.approx(0.01 / 38) and lrs[-1] == 0.0  # the decay reaches 0 at the run's last step
    short = make_problem('mlp', seed=1, epochs=1)
    assert make_optimizer('AdamW+WSD', short).schedulers[0].total_steps == 32
    with pytest.raises(ValueError, match="needs the run's length"):
        make_optimizer('AdamW+WSD', list(task.model.parameters()))


def test_existing_optimizers_are_unchanged_by_the_wrapper():
    from modern_updates import optim
    from modern_updates.benchmark import make_optimizer
    task = make_problem('mlp', seed=1)
    opt = make_optimizer('Nesterov', task, lr=0.1)
    (sgd,) = opt.optimizers
    assert type(sgd) is optim.SGD and not opt.schedulers
    assert (sgd.defaults['nesterov'], sgd.defaults['momentum'], sgd.defaults['lr']) == (True, 0.9, 0.1)
    with pytest.raises(ValueError, match="unknown optimizer 'Shampoo'; known optimizers: SGD"):
        make_optimizer('Shampoo', task)
    with pytest.raises(ValueError, match="unknown optimizer 'muon'"): sample_hparams('muon', torch.Generator())


def _benchmark_imports():
    "The modules of modern_updates.benchmark that each of its modules imports (anywhere in it, functions included)."
    import ast
    from pathlib import Path
    import modern_updates.benchmark as package
    folder = Path(package.__file__).parent
    modules = {path.stem for path in folder.glob('*.py')}
    graph = {}
    for name in modules:
        found = set()
        for node in ast.walk(ast.parse((folder / f'{name}.py').read_text(encoding='utf-8'))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1:  # from .x import y, from . import x
                    found |= {node.module.split('.')[0]} if node.module else {a.name for a in node.names}
                elif node.level == 0 and (node.module or '').startswith('modern_updates.benchmark'):
                    rest = node.module.removeprefix('modern_updates.benchmark').lstrip('.')
                    found |= {rest.split('.')[0]} if rest else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name.split('.')[2] for a in node.names if a.name.startswith('modern_updates.benchmark.')}
        graph[name] = found & modules
    return graph


def test_speed_benchmarks_import_one_way():
    "speed imports norm_speed, both import the timing helpers from timing, and no import leads back: no cycle."
    graph = _benchmark_imports()
    assert 'timing' in graph['speed'] and 'timing' in graph['norm_speed'] and 'norm_speed' in graph['speed']
    assert 'speed' not in graph['norm_speed'] and not graph['timing'] & {'speed', 'norm_speed'}
    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph[start])
    assert not [name for name in graph if reaches(name, name)], graph
    from modern_updates.benchmark import norm_speed, speed, timing
    assert speed.copy_bandwidth is timing.copy_bandwidth is norm_speed.copy_bandwidth


def test_default_settings_are_compared_with_torch_s_default_and_fastest(capsys):
    "torch's default, foreach and fused steps are timed beside ours; the summary prints the ratios with the targets."
    from modern_updates.benchmark import speed
    rows, _ = speed.run('cpu', shapes=[(200, 50), (20, 50)], names=['SGD', 'RMSprop'], steps=1, rounds=1)
    assert len(rows) == 8
    for r in rows:
        variants = [r['torch_default_ms'], r['torch_foreach_ms']] + ([r['torch_fused_ms']] if r['optimizer'] == 'SGD' else [])
        assert all(t > 0 for t in variants) and r['torch_fastest_ms'] == min(variants)
        assert (r['torch_fused_ms'] is None) == (r['optimizer'] == 'RMSprop')  # torch's RMSprop has no fused step
        assert r['torch_fastest'] in {'torch default', 'torch foreach', 'torch fused'}
        assert math.isclose(r['ratio_vs_torch_default'], r['ours_ms'] / r['torch_default_ms'])
        assert math.isclose(r['ratio_vs_torch_fastest'], r['ours_ms'] / r['torch_fastest_ms'])
        assert math.isclose(r['unchecked_ratio_vs_torch_fastest'], r['ours_unchecked_ms'] / r['torch_fastest_ms'])
    lion = dict(rows[0], optimizer='Lion')
    for key in [k for k in lion if k.startswith(('torch_', 'ratio_vs_torch', 'unchecked_ratio_vs_torch'))]: del lion[key]
    speed._print_summary(rows + [lion], 'cpu')
    out = capsys.readouterr().out
    assert 'default settings against torch' in out and 'Lion: not in this summary' in out
    assert '200x50, gradients kept' in out and '20x50, gradients replaced' in out
    verdicts = re.findall(r'\d\.\d\d (PASS|over)', out)
    assert len(verdicts) == 2 * 2 * 3  # 200 tensors: three targets for each optimizer and gradient mode; none at 20


def test_training_iteration_on_a_tiny_gpt():
    "The iteration benchmark's code on the CPU: both optimizers train their copy, and the same way."
    from modern_updates.benchmark import speed
    tiny = dict(n_layers=2, d_model=64, n_heads=4, vocab=256, context=32, batch=4, warmup=1, rounds=2, iterations=2)
    r = speed.time_iteration('cpu', tiny)
    assert r['ours_ms'] > 0 and r['reference_ms'] > 0 and r['ratio_vs_reference'] > 0
    assert r['parameters'] == 256 * 64 + 32 * 64 + 2 * (12 * 64 * 64 + 13 * 64) + 2 * 64  # the head is tied
    assert r['ours_loss'] < r['initial_loss'] - 0.1 and r['weight_change'] > 1e-3  # 6 steps on one batch
    assert math.isclose(r['ours_loss'], r['reference_loss'], rel_tol=1e-3)
    assert r['weight_difference'] < 1e-2 * r['weight_change']  # AdamW is AdamW


def test_iteration_benchmark_needs_a_gpu(tmp_path, capsys, monkeypatch):
    "On the CPU `main` skips the iteration, saying so, and writes no `iteration` entry."
    from modern_updates.benchmark import norm_speed, speed
    monkeypatch.setattr(speed, 'run', lambda device, shapes: ([], 1e9))
    monkeypatch.setattr(norm_speed, 'run', lambda device, quick: [])
    speed.main(['--device', 'cpu', '--quick', '--out', str(tmp_path / 'speed.json')])
    assert 'skipped, it needs a GPU' in capsys.readouterr().out
    assert 'iteration' not in json.loads((tmp_path / 'speed.json').read_text())
