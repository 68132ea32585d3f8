"Part 3 of the book: normalisation layers, equal to torch.nn's and interchangeable with them."
from .batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d
from .layernorm import LastDimsNorm, LayerNorm
from .rmsnorm import RMSNorm
from .transformer import SelfAttention, Transformer, TransformerBlock
