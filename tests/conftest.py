import pytest
import torch

torch.set_num_threads(1)  # small tensors: one thread is as fast, and immune to a busy second core

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device'))]
