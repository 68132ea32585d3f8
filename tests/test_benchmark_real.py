"The benchmark's real workloads (digits, chars), its AlgoPerf scoring, its command line's messages and its results file."
import json
import math
import socket
import sys
from pathlib import Path

import pytest
import torch

from modern_updates.benchmark import PROBLEMS, make_problem
from modern_updates.benchmark import problems as P
from modern_updates.benchmark.protocol import (ABLATION, OPTIMIZER_SPECS, REFERENCE, TAUS, algoperf_scores, main,
                                               make_optimizer, performance_profiles, time_to_target)

RESULTS = Path(__file__).resolve().parents[1] / 'nbs' / 'results' / 'benchmark_full.json'


@pytest.fixture
def offline(monkeypatch):
    "Any attempt to open a network connection fails."
    def refuse(*args, **kwargs): raise OSError('network access during a test')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


@pytest.fixture
def fresh_data():
    "The cached data sets are loaded again in the test, and again after it."
    P._digits_data.cache_clear(); P._chars_data.cache_clear()
    yield
    P._digits_data.cache_clear(); P._chars_data.cache_clear()


def test_digits_load_offline_with_a_fixed_split(offline, fresh_data):
    pytest.importorskip('sklearn')
    splits = P._digits_data()
    assert {s: tuple(t[0].shape) for s, t in splits.items()} == {
        'train': (1157, 1, 8, 8), 'valid': (320, 1, 8, 8), 'test': (320, 1, 8, 8)}
    assert sum(len(t[1]) for t in splits.values()) == 1797
    for x, y in splits.values():
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and set(y.tolist()) == set(range(10))
    P._digits_data.cache_clear()
    again = P._digits_data()
    assert all(torch.equal(a, b) for s in splits for a, b in zip(splits[s], again[s])), 'the split is fixed'
    problem = make_problem('digits')
    assert (problem.num_steps, problem.batch_size, problem.metric) == (144, 64, 'accuracy')


def test_chars_load_offline_split_by_topic(offline, fresh_data):
    from pydoc_data.topics import topics
    splits = P._chars_data()
    assert {s: tuple(t[0].shape) for s, t in splits.items()} == {'train': (3840, 32), 'valid': (128, 32),
                                                                 'test': (128, 32)}
    for x, y in splits.values():
        assert torch.equal(x[:, 1:], y[:, :-1]) and 0 <= x.min() and x.max() < 128
    split_of = P.topic_split(topics)
    names = {s: {n for n, t in split_of.items() if t == s} for s in ['train', 'valid', 'test']}
    assert not (names['train'] & names['valid'] or names['train'] & names['test'] or names['valid'] & names['test'])
    n = len(topics)
    assert (len(names['valid']), len(names['test'])) == ((n + 1) // 10, n // 10), 'one topic in ten each'
    valid_text = '\n\n'.join(topics[n] for n in sorted(names['valid'])).encode('ascii', 'replace')
    assert bytes(splits['valid'][0][0].tolist()) == valid_text[:32], 'validation starts with the first valid topic'
    problem = make_problem('chars')
    assert (problem.num_steps, problem.eval_every, problem.metric) == (240, 20, 'loss')


def test_real_models_give_muon_their_hidden_matrices():
    pytest.importorskip('sklearn')
    for name, count in [('digits', 1), ('chars', 8)]:
        muon, adamw = make_optimizer('Muon', make_problem(name, seed=1)).optimizers
        assert sum(len(g['params']) for g in muon.param_groups) == count, name
        assert all(p.ndim == 2 for g in muon.param_groups for p in g['params'])
    post = make_problem('chars', seed=1, placement='post').model.body[0]
    assert post.placement == 'post'


def test_missing_scikit_learn_says_how_to_install_it(monkeypatch, fresh_data, capsys):
    monkeypatch.setitem(sys.modules, 'sklearn', None)  # import sklearn now fails
    with pytest.raises(ImportError, match=r"'digits' workload .* pip install 'modern-updates\[bench\]'"):
        make_problem('digits')
    with pytest.raises(SystemExit) as exit:
        main(['--config', 'full', '--problems', 'digits', '--out', 'unused.json', '--no-progress'])
    assert exit.value.code == 2 and "pip install 'modern-updates[bench]'" in capsys.readouterr().err


@pytest.mark.parametrize('args, message', [
    (['--problems', 'cifar10'], "unknown problem 'cifar10'; known problems: quadratic_deep"),
    (['--optimizers', 'Shampoo'], "unknown optimizer 'Shampoo'; known optimizers: SGD"),
    (['--problems', 'mlp', '--target', 'mlp=high'], "bad target 'mlp=high': write WORKLOAD=VALUE"),
    (['--problems', 'mlp', '--target', 'digits=0.9'], "a target for 'digits', which this run does not benchmark"),
    (['--config', 'huge'], "invalid choice: 'huge'"),
])
def test_the_command_line_names_bad_input(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit:
        main(['--out', str(tmp_path / 'r.json'), '--no-progress', *args])
    assert exit.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / 'r.json').exists(), 'nothing ran'


def _run(problem, optimizer, phase, curve, seconds=None, higher=False):
    return dict(problem=problem, optimizer=optimizer, phase=phase, higher_is_better=higher, valid_curve=curve,
                curve_seconds=seconds or [0.1 * s for s, _ in curve])


def test_time_to_target_and_profiles_by_hand():
    runs = [_run('w', 'x', 'tuned', [[10, 3.0], [20, 1.0]]), _run('w', 'x', 'tuned', [[10, 0.5], [20, 0.4]]),
            _run('w', 'x', 'tuned', [[10, 2.0], [20, 2.0]])]
    steps, seconds = time_to_target(runs, 1.0)
    assert steps == 20 and seconds == pytest.approx(2.0)  # the median of 20, 10 and never
    times = {'a': {'x': 1.0, 'y': 2.0}, 'b': {'x': 3.0, 'y': math.inf}, 'c': {'x': math.inf, 'y': math.inf}}
    profiles = performance_profiles(times, taus=[1.0, 1.9, 2.0, 4.0])
    assert profiles == {'x': [2 / 3] * 4, 'y': [0, 0, 1 / 3, 1 / 3]}


def test_a_target_nobody_reaches_is_named_and_fails_everyone():
    records = [_run('mlp', o, phase, [[10, 0.6], [20, 0.7]], higher=True) for o in ['x', 'y']
               for phase in ['one-shot', 'tuned']]
    with pytest.warns(UserWarning, match=r"no optimizer reached the target 0.95 on 'mlp' within its budget"):
        scores = algoperf_scores(records, {'mlp': 0.95})
    assert scores['tuned']['steps'] == {'mlp': {'x': math.inf, 'y': math.inf}}
    with pytest.raises(ValueError, match="unknown problem 'cifar10'"): algoperf_scores(records, {'cifar10': 0.5})
    assert all(rho == [0.0] * len(TAUS) for rho in scores['tuned']['profiles']['steps'].values())


def _committed():
    with open(RESULTS) as f: return json.load(f)


def test_the_results_file_has_time_to_target_and_profiles_for_every_optimizer_on_six_workloads():
    data = _committed()
    meta, algoperf = data['meta'], data['algoperf']
    assert meta['problems'] == list(PROBLEMS) and len(PROBLEMS) == 6
    assert meta['optimizers'] == list(OPTIMIZER_SPECS) and {'Muon', 'AdamWScheduleFree', 'AdamW+WSD'} <= set(
        meta['optimizers'])
    assert {'machine', 'python', 'torch', 'versions', 'date', 'seconds'} <= set(meta)
    assert set(algoperf['targets']) == set(PROBLEMS) and algoperf['reference'].keys() == REFERENCE.keys()
    assert all(isinstance(t, float) and math.isfinite(t) for t in algoperf['targets'].values())
    assert algoperf['taus'][0] == 1 and algoperf['taus'][-1] == pytest.approx(4)
    for phase in ['one-shot', 'tuned']:
        scores = algoperf[phase]
        for measure in ['steps', 'seconds']:
            assert set(scores[measure]) == set(PROBLEMS)
            for w in PROBLEMS:
                assert set(scores[measure][w]) == set(meta['optimizers']), (phase, measure, w)
                values = [v for v in scores[measure][w].values() if v is not None]  # None: not reached
                assert all(v > 0 for v in values)
            profiles = scores['profiles'][measure]
            assert set(profiles) == set(meta['optimizers'])
            for rho in profiles.values():
                assert len(rho) == len(algoperf['taus']) and all(0 <= a <= b <= 1 for a, b in zip(rho, rho[1:]))
            assert max(rho[-1] for rho in profiles.values()) > 0, 'someone solves something'
    # the ablation of chapter 11: each placement with each optimizer and seed, on the character model
    ablation = data['ablation']
    assert len(ablation) == len(ABLATION['placements']) * len(ABLATION['optimizers']) * len(ABLATION['seeds'])
    assert {(r['placement'], r['optimizer']) for r in ablation} == {
        (p, o) for p in ABLATION['placements'] for o in ABLATION['optimizers']}
