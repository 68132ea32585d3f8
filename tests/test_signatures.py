"""Each optimizer's signature names its keywords, as torch's does: training scripts read it
(`'fused' in inspect.signature(AdamW).parameters`, as nanoGPT does), and so do IDEs and help()."""
import inspect

import pytest
import torch

from modern_updates.optim import SGD, Adagrad, Adam, AdamW, Lion, Muon, RMSprop, UpdateRuleOptimizer

COUNTERPARTS = {SGD: torch.optim.SGD, Adagrad: torch.optim.Adagrad, RMSprop: torch.optim.RMSprop,
                Adam: torch.optim.Adam, AdamW: torch.optim.AdamW, Lion: None, Muon: getattr(torch.optim, 'Muon', None)}
# Where our default differs from torch's on purpose (the chapters say why)
OWN_DEFAULTS = {(Muon, 'foreach')}


def parameters(cls): return inspect.signature(cls).parameters


@pytest.mark.parametrize('ours', COUNTERPARTS, ids=lambda c: c.__name__)
def test_the_signature_names_every_keyword_torchs_and_ours(ours):
    named = parameters(ours)
    assert not any(p.kind == p.VAR_KEYWORD for p in named.values()), f'{ours.__name__} hides keywords in **options'
    for name, default in UpdateRuleOptimizer.base_options.items():  # ours: one default, stated in the base
        assert name in named, f'{ours.__name__} does not name {name}'
        if (ours, name) not in OWN_DEFAULTS and name != 'decoupled_weight_decay':
            assert named[name].default == default, (ours.__name__, name)
    reference = COUNTERPARTS[ours]
    if reference is None: return
    theirs = parameters(reference)
    for name, p in theirs.items():
        assert name in named, f'{ours.__name__} lacks torch.optim.{reference.__name__}({name}=)'
        assert named[name].kind == p.kind, f'{name}: {named[name].kind} against torch\'s {p.kind}'
        if (ours, name) not in OWN_DEFAULTS:
            assert named[name].default == p.default, f'{ours.__name__}({name}={named[name].default!r}) against torch'
    # torch's positional arguments, in torch's order: a call that passes them by position means the same
    positional = lambda sig: [n for n, p in sig.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional(named)[:len(positional(theirs))] == positional(theirs)


@pytest.mark.parametrize('ours', COUNTERPARTS, ids=lambda c: c.__name__)
def test_an_unknown_keyword_is_refused_by_name(ours):
    with pytest.raises(TypeError, match='fuzed'):
        ours([torch.nn.Parameter(torch.zeros(2, 2))], fuzed=True)


def test_nanogpts_check_finds_fused():
    "nanoGPT's configure_optimizers asks the signature, and runs without fused kernels where it finds none."
    assert 'fused' in inspect.signature(AdamW).parameters


def test_help_of_an_optimizer_shows_the_subclass_contract():
    "The contract a subclass fulfils is the base's docstring, and help(Adam) shows it (through __init_subclass__)."
    import pydoc
    from modern_updates.optim import Adam, UpdateRuleOptimizer
    text = pydoc.render_doc(Adam, renderer=pydoc.plaintext)
    assert UpdateRuleOptimizer.__doc__.splitlines()[0] in text
    assert '`hyper_checks`: a check' in text and '`init_state(param, group)`' in text
