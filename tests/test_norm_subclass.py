"Issue 11, section 2: the norm layers are torch's classes, so code that looks for torch's classes finds them."
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from modern_updates.norm import BatchNorm1d, BatchNorm2d, LayerNorm, RMSNorm


def test_isinstance_of_torch_classes():
    assert isinstance(LayerNorm(4), nn.LayerNorm) and isinstance(RMSNorm(4), nn.RMSNorm)
    assert isinstance(BatchNorm1d(4), nn.BatchNorm1d) and isinstance(BatchNorm2d(4), nn.BatchNorm2d)
    assert isinstance(BatchNorm1d(4), _BatchNorm) and isinstance(BatchNorm2d(4), _BatchNorm)
    # torch's constructor, attributes and state_dict keys
    ln = LayerNorm([3, 4], eps=1e-3, bias=False)
    assert ln.normalized_shape == (3, 4) and ln.bias is None and list(ln.state_dict()) == ['weight']
    assert list(RMSNorm(4).state_dict()) == ['weight'] and RMSNorm(4).eps is None
    assert list(BatchNorm2d(3).state_dict()) == list(nn.BatchNorm2d(3).state_dict())
    assert repr(BatchNorm1d(3, momentum=None)) == repr(nn.BatchNorm1d(3, momentum=None))
    assert BatchNorm1d(3, bias=False).bias is None


@pytest.mark.parametrize('torch_takes_bias', [True, False], ids=['bias-keyword', 'torch-2.11'])
def test_batchnorm_without_bias_on_every_torch(torch_takes_bias, monkeypatch):
    "bias=False drops the bias whether or not torch's BatchNorm takes the keyword (torch 2.11 does not)."
    import modern_updates.norm.batchnorm as batchnorm
    if torch_takes_bias and not batchnorm._TORCH_TAKES_BIAS: pytest.skip("this torch's BatchNorm has no bias keyword")
    monkeypatch.setattr(batchnorm, '_TORCH_TAKES_BIAS', torch_takes_bias)
    layer = BatchNorm1d(3, bias=False)
    assert layer.bias is None and layer.weight.shape == (3,)
    assert list(layer.state_dict()) == ['weight', 'running_mean', 'running_var', 'num_batches_tracked']
    with torch.no_grad(): layer.weight.fill_(2.0)
    layer.reset_parameters()  # torch 2.11's own reset would call zeros_(None)
    assert torch.equal(layer.weight, torch.ones(3)) and layer.num_batches_tracked == 0
    x = torch.randn(8, 3)
    torch.testing.assert_close(layer(x), nn.functional.batch_norm(x, None, None, layer.weight, None, True))
    assert BatchNorm1d(3, affine=False, bias=False).weight is None


def test_update_bn_recomputes_the_running_statistics():
    torch.manual_seed(0)
    data = [torch.randn(16, 4) * 3 + 2 for _ in range(5)]
    models = [nn.Sequential(nn.Linear(4, 6), bn(6), nn.ReLU(), nn.Linear(6, 6), bn(6)) for bn in (BatchNorm1d, nn.BatchNorm1d)]
    models[1].load_state_dict(models[0].state_dict())
    for model in models:
        torch.optim.swa_utils.update_bn(data, model)
    ours, theirs = models
    assert ours[1].running_mean.abs().sum() > 0, 'the statistics were recomputed'
    torch.testing.assert_close(ours.state_dict(), theirs.state_dict())
    assert ours[1].momentum == 0.1, 'update_bn restores the momentum'


def test_weight_decay_exclusion_by_type():
    model = nn.Sequential(nn.Linear(4, 4), LayerNorm(4), BatchNorm1d(4), RMSNorm(4))
    norm_params = [p for m in model.modules() if isinstance(m, (nn.LayerNorm, _BatchNorm, nn.RMSNorm)) for p in m.parameters()]
    assert len(norm_params) == 5


def _sync_batchnorm_worker(rank, world_size, init_file):
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 1), BatchNorm2d(4), nn.Flatten(), nn.Sequential(nn.Linear(100, 5), BatchNorm1d(5)))
        with torch.no_grad():
            model[1].running_mean.normal_(); model[1].weight.normal_()
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        assert isinstance(converted[1], nn.SyncBatchNorm) and isinstance(converted[3][1], nn.SyncBatchNorm)
        torch.testing.assert_close(converted.state_dict(), model.state_dict())
        x = torch.randn(2, 3, 5, 5)
        converted.eval(); model.eval()
        torch.testing.assert_close(converted(x), model(x))  # eval mode normalises the same way, without syncing
        total = torch.tensor([float(rank)])
        dist.all_reduce(total)
        assert total.item() == 1.0
    finally:
        dist.destroy_process_group()


def test_sync_batchnorm_conversion_with_gloo():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_sync_batchnorm_worker, args=(2, os.path.join(tmp, 'init')), nprocs=2, join=True)


@pytest.mark.parametrize('cls', [BatchNorm1d, BatchNorm2d], ids=lambda c: c.__name__)
def test_version_1_checkpoint_loads_as_torch_upgrades_it(cls):
    "A checkpoint from before num_batches_tracked (state_dict version 1) loads, with num_batches_tracked = 0."
    old = getattr(nn, cls.__name__)(4)
    with torch.no_grad(): old.running_mean.normal_(); old.weight.normal_()
    state = old.state_dict()
    del state['num_batches_tracked']
    state._metadata[''] = {'version': 1}
    ours, theirs = cls(4), getattr(nn, cls.__name__)(4)
    ours.load_state_dict(state); theirs.load_state_dict(state)
    torch.testing.assert_close(ours.state_dict(), theirs.state_dict())
    assert ours.num_batches_tracked.item() == 0
    with pytest.raises(RuntimeError, match='num_batches_tracked'):  # a version-2 checkpoint must have it
        state._metadata[''] = {'version': 2}; cls(4).load_state_dict(state)
