"The cheat sheet (nbs/95_cheat_sheet.ipynb) is what the package does: every optimizer, its defaults, its state and its cost."
import inspect

import pytest
import torch

from modern_updates import optim
from modern_updates.cheat_sheet import REFERENCES, SETTINGS, cheat_sheet_rows, cheat_sheet_tables

ROWS = cheat_sheet_rows()


def reference_state(name, **kwargs):
    "The reference implementation's per-parameter state after one step on an 8×8 float32 matrix, as {name: bytes per parameter}."
    module, _, attr = REFERENCES[name].rpartition('.')
    ref = getattr(pytest.importorskip(module), attr, None)
    if ref is None: pytest.skip(f'{REFERENCES[name]} is not in this version')
    p = torch.nn.Parameter(torch.randn(8, 8))
    opt = ref([p], **kwargs)
    if hasattr(opt, 'train'): opt.train()
    p.grad = torch.randn(8, 8)
    opt.step()
    return {k: v.element_size() * v.numel() / p.numel() for k, v in opt.state[p].items()
            if torch.is_tensor(v) and v.numel() == p.numel()}


def test_every_optimizer_of_the_package_has_a_row():
    exported = {name for name, obj in vars(optim).items() if inspect.isclass(obj)
                and issubclass(obj, torch.optim.Optimizer) and obj is not optim.UpdateRuleOptimizer}
    assert exported == {row['cls'] for row in ROWS}


@pytest.mark.parametrize('row', ROWS, ids=[row['optimizer'] for row in ROWS])
def test_state_and_bytes_are_the_references(row):
    kwargs = SETTINGS.get(row['optimizer'], (row['cls'], {}))[1]
    expected = reference_state(row['cls'], **kwargs)
    assert row['state'] == list(expected), f"{row['optimizer']}: state {row['state']}, the reference keeps {list(expected)}"
    assert row['bytes_per_param'] == sum(expected.values())


@pytest.mark.parametrize('row', ROWS, ids=[row['optimizer'] for row in ROWS])
def test_defaults_are_the_signature_and_the_references(row):
    signature = inspect.signature(getattr(optim, row['cls']).__init__).parameters
    kwargs = SETTINGS.get(row['optimizer'], (row['cls'], {}))[1]
    for key, value in row['defaults'].items():
        assert value == kwargs.get(key, signature[key].default), key
    module, _, attr = REFERENCES[row['cls']].rpartition('.')
    ref = getattr(pytest.importorskip(module), attr)
    ref_defaults = inspect.signature(ref.__init__).parameters
    differ = [k for k in row['defaults'] if k in ref_defaults and k not in kwargs and ref_defaults[k].default != row['defaults'][k]]
    assert differ == row['reference_differs']


def test_tables_show_every_row():
    rules, numbers, references = cheat_sheet_tables(ROWS)
    assert len(rules.splitlines()) == len(numbers.splitlines()) == len(references.splitlines()) == len(ROWS) + 2
    for row, rule_line, number_line, reference_line in zip(
            ROWS, rules.splitlines()[2:], numbers.splitlines()[2:], references.splitlines()[2:]):
        assert rule_line.startswith(f"| {row['optimizer']} | {row['chapter']} |")
        assert f"| {row['bytes_per_param']:g} |" in number_line
        assert all(f'{key}=' in number_line for key in row['defaults'])
        assert f"`{row['reference']}`" in reference_line
