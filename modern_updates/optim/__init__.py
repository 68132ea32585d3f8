"Part 1 of the book: optimizers, each a small update rule on one shared base."
from .tensorlist import TensorList
from .base import UpdateRuleOptimizer
from .sgd import SGD
from .adagrad import Adagrad
from .adam import Adam
from .rmsprop import RMSprop
from .adamw import AdamW
from .lion import Lion
# The fast paths register their kernels with the base (appendix D)
from . import fused_torch, triton_step
# Beyond the lecture (chapters 13-15)
from .muon import Muon, muon_param_groups, muon_with_adamw
from .lr_scheduler import WarmupStableDecay
from .schedule_free import AdamWScheduleFree
