"Part 1 of the book: optimizers, each a small update rule on one shared base."
from .base import TensorList, UpdateRuleOptimizer
from .sgd import SGD
from .adagrad import Adagrad
from .adam import Adam
from .rmsprop import RMSprop
from .adamw import AdamW
from .lion import Lion
