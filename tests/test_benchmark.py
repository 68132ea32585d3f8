"The benchmark: deterministic problems, DeepOBS's quadratic_deep spectrum, the protocol, the records, bad names."
import math

import pytest
import torch

from modern_updates.benchmark import (PROBLEMS, available_optimizers, make_problem, run_benchmark, sample_hparams,
                                      train_run)
from modern_updates.benchmark.problems import LegacyRandomState, quadratic_deep_hessian


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
            'test', 'diverged', 'seconds', 'valid_curve'}
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


def test_the_committed_results_file_is_what_the_protocol_computes():
    "Re-run one (problem, optimizer) pair of the full configuration and compare it with nbs/results/benchmark_full.json."
    from pathlib import Path

    from modern_updates.benchmark import CONFIGS, benchmark_pair, load_results
    meta, records = load_results(Path(__file__).resolve().parents[1] / 'nbs' / 'results' / 'benchmark_full.json')
    assert meta['settings'] == {k: v for k, v in CONFIGS['full'].items()}
    settings = CONFIGS['full']
    ours = benchmark_pair('rosenbrock', 'SGD', budget=settings['budget'], seeds=settings['seeds'])
    theirs = [r for r in records if (r['problem'], r['optimizer']) == ('rosenbrock', 'SGD')]
    drop = {'seconds', 'valid_curve'}  # the file records final metrics only
    strip = lambda rs: [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items() if k not in drop} for r in rs]
    def same(a, b): return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    for a, b in zip(strip(ours), strip(theirs), strict=True):
        assert a.keys() == b.keys() and all(same(a[k], b[k]) for k in a), (a, b)


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
