"""The table of optimizers under test, in the spirit of torch's OptimizerInfo.

Each optimizer is one `OptimizerCase` line in CASES: every test in test_optimizers.py runs on it.
"""
from dataclasses import dataclass, field
from typing import Callable

import torch

from modern_updates.optim import SGD


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
]
