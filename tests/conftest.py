import pytest
import torch

torch.set_num_threads(1)  # small tensors: one thread is as fast, and immune to a busy second core

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device'))]


def spy_host_reads(monkeypatch, watched=None):
    """Record every read of a tensor's value on the host (`item()`, `bool()`, `.cpu()`, ...), of any tensor or only of
    those in `watched`: on a GPU each one waits for the device. Returns the list it appends the method names to."""
    read = []
    for name in ('__bool__', '__int__', '__float__', '__index__', 'item', 'tolist', 'cpu'):
        original = getattr(torch.Tensor, name)
        def spy(t, *args, _name=name, _original=original):
            if watched is None or any(t is w for w in watched): read.append(_name)
            return _original(t, *args)
        monkeypatch.setattr(torch.Tensor, name, spy)
    return read
