"Part 1 of the book: optimizers, each a small update rule on one shared base."
from .base import TensorList, UpdateRuleOptimizer
from . import triton_step  # registers the one-launch step with the base
from .sgd import SGD
from .adagrad import Adagrad
from .adam import Adam
from .rmsprop import RMSprop
from .adamw import AdamW
from .lion import Lion
# Beyond the lecture (chapters 13-15)
from .muon import Muon, muon_param_groups, muon_with_adamw
from .lr_scheduler import WarmupStableDecay
from .schedule_free import AdamWScheduleFree
