"""The table of optimizers under test, in the spirit of torch's OptimizerInfo.

Each optimizer is one `OptimizerCase` line in CASES: every test in test_optimizers.py runs on it.
"""
from dataclasses import dataclass, field
from typing import Callable

import torch

from modern_updates.optim import SGD
from modern_updates.optim.adagrad import Adagrad
from modern_updates.optim.adam import Adam
from modern_updates.optim.rmsprop import RMSprop
from modern_updates.optim.adamw import AdamW
from modern_updates.optim.lion import Lion
import lion_pytorch


@dataclass
class OptimizerCase:
    ours: type                          # the class under test
    reference: Callable                 # builds the reference optimizer: reference(params, **kwargs)
    configs: list                       # keyword sets, each compared step for step with the reference
    bad: list                           # (keywords, text the ValueError must contain)
    momentum_key: str | None = None     # group key OneCycleLR cycles ('momentum' or 'betas'), None if none
    reference_kwargs: Callable = field(default=lambda kwargs: kwargs)  # our keywords -> the reference's

    @property
    def name(self): return self.ours.__name__


CASES = [
    OptimizerCase(
        SGD, torch.optim.SGD, momentum_key='momentum',
        configs=[dict(lr=0.1), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01),
                 dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)],
        bad=[(dict(lr=-0.1), 'lr=-0.1'), (dict(lr=float('inf')), 'lr=inf'), (dict(momentum=-0.5), 'momentum=-0.5'),
             (dict(momentum=1.1), 'momentum=1.1'), (dict(dampening=2.0), 'dampening=2.0'),
             (dict(weight_decay=-1e-4), 'weight_decay=-0.0001'), (dict(nesterov=True), 'nesterov=True needs'),
             (dict(momentum=0.9, dampening=0.1, nesterov=True), 'nesterov=True needs'), (dict(ema='yes'), "ema='yes'"),
             (dict(foreach='fast'), "foreach='fast'"), (dict(maximize=None), 'maximize=None')]),
    OptimizerCase(
        Adam, torch.optim.Adam, momentum_key='betas',
        configs=[dict(lr=0.01), dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
                 dict(lr=0.01, amsgrad=True, maximize=True), dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
                 dict(lr=0.01, betas=(0.0, 0.9), amsgrad=True, weight_decay=0.05, decoupled_weight_decay=True)],
        bad=[(dict(lr=-0.1), 'lr=-0.1'), (dict(betas=(1.0, 0.999)), 'betas=(1.0, 0.999)'),
             (dict(betas=(0.9, -0.1)), 'betas=(0.9, -0.1)'), (dict(betas=0.9), 'betas=0.9'), (dict(eps=-1e-8), 'eps=-1e-08'),
             (dict(weight_decay=-0.01), 'weight_decay=-0.01'), (dict(amsgrad=1), 'amsgrad=1'),
             (dict(maximize='no'), "maximize='no'"), (dict(foreach=0), 'foreach=0'),
             (dict(decoupled_weight_decay='yes'), "decoupled_weight_decay='yes'"),
             (dict(max_grad_norm=0.0), 'max_grad_norm=0.0'), (dict(max_grad_value=-1.0), 'max_grad_value=-1.0')]),
    OptimizerCase(
        Adagrad, torch.optim.Adagrad,
        configs=[dict(lr=0.1), dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.3),
                 dict(lr=0.05, weight_decay=0.05, eps=1e-6, maximize=True)],
        bad=[(dict(lr=-0.1), 'lr=-0.1'), (dict(lr_decay=-0.5), 'lr_decay=-0.5'), (dict(weight_decay=-1.0), 'weight_decay=-1.0'),
             (dict(initial_accumulator_value=-0.1), 'initial_accumulator_value=-0.1'), (dict(eps=-1e-10), 'eps=-1e-10'),
             (dict(eps=float('nan')), 'eps=nan'), (dict(maximize=1), 'maximize=1'), (dict(foreach='yes'), "foreach='yes'"),
             (dict(decoupled_weight_decay=None), 'decoupled_weight_decay=None'),
             (dict(max_grad_norm=-1.0), 'max_grad_norm=-1.0'), (dict(max_grad_value=0), 'max_grad_value=0')]),
    OptimizerCase(
        RMSprop, torch.optim.RMSprop, momentum_key='momentum',
        configs=[dict(lr=0.01), dict(lr=0.01, alpha=0.9, centered=True, weight_decay=0.01),
                 dict(lr=0.005, momentum=0.9, eps=1e-6), dict(lr=0.005, momentum=0.5, centered=True, maximize=True)],
        bad=[(dict(lr=-0.1), 'lr=-0.1'), (dict(alpha=1.5), 'alpha=1.5'), (dict(alpha=-0.1), 'alpha=-0.1'),
             (dict(eps=-1e-8), 'eps=-1e-08'), (dict(weight_decay=-0.1), 'weight_decay=-0.1'),
             (dict(momentum=-0.9), 'momentum=-0.9'), (dict(centered=1), 'centered=1'), (dict(maximize='no'), "maximize='no'"),
             (dict(foreach=1), 'foreach=1'), (dict(decoupled_weight_decay='no'), "decoupled_weight_decay='no'"),
             (dict(max_grad_norm=float('inf')), 'max_grad_norm=inf'), (dict(max_grad_value=-2.0), 'max_grad_value=-2.0')]),
    OptimizerCase(
        AdamW, torch.optim.AdamW, momentum_key='betas',
        configs=[dict(lr=0.01), dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                 dict(lr=0.01, amsgrad=True, maximize=True, weight_decay=0.5), dict(lr=0.01, weight_decay=0.0)],
        bad=[(dict(lr=-0.1), 'lr=-0.1'), (dict(betas=(0.9, 1.0)), 'betas=(0.9, 1.0)'), (dict(eps=float('nan')), 'eps=nan'),
             (dict(weight_decay=-0.01), 'weight_decay=-0.01'), (dict(amsgrad='yes'), "amsgrad='yes'"),
             (dict(decoupled_weight_decay=1), 'decoupled_weight_decay=1'), (dict(max_grad_norm=-1.0), 'max_grad_norm=-1.0')]),
    OptimizerCase(
        # The reference has no maximize, foreach or clipping; its default decay is our decoupled_weight_decay=True.
        Lion, lion_pytorch.Lion, momentum_key='betas',
        reference_kwargs=lambda kw: {k: v for k, v in kw.items() if k in ('lr', 'betas', 'weight_decay')},
        configs=[dict(lr=1e-3), dict(lr=3e-3, betas=(0.95, 0.98), weight_decay=0.5), dict(lr=1e-3, betas=(0.0, 0.9), weight_decay=2.0)],
        bad=[(dict(lr=-1e-4), 'lr=-0.0001'), (dict(betas=(0.9, 1.0)), 'betas=(0.9, 1.0)'), (dict(betas=(-0.1, 0.99)), 'betas=(-0.1, 0.99)'),
             (dict(betas=0.9), 'betas=0.9'), (dict(weight_decay=float('nan')), 'weight_decay=nan'),
             (dict(maximize=1), 'maximize=1'), (dict(foreach='no'), "foreach='no'"),
             (dict(decoupled_weight_decay='paper'), "decoupled_weight_decay='paper'"),
             (dict(max_grad_norm=0.0), 'max_grad_norm=0.0'), (dict(max_grad_value=float('nan')), 'max_grad_value=nan')]),
]
