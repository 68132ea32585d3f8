"""Distributed training, the way a user who outgrows one device runs the package: every optimizer under DDP and
FSDP2 (`fully_shard`), 2 processes on the CPU with gloo, against torch's optimizer (lion-pytorch for Lion), and
through torch.distributed.checkpoint's get/set_optimizer_state_dict. One spawn runs every check."""
import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from optimizer_cases import CASES

WORLD, STEPS = 2, 4
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason='no gloo backend')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def wrap(model, how):
    if how == 'ddp': return torch.nn.parallel.DistributedDataParallel(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh('cpu', (WORLD,))  # without it, a machine with a GPU shards onto CUDA
    for layer in model:
        if isinstance(layer, torch.nn.Linear): fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def train(model, opt, steps, start=0):
    rank = dist.get_rank()
    for t in range(start, start + steps):
        g = torch.Generator().manual_seed(100 * t + rank)  # each rank its own batch
        x, y = torch.randn(5, 6, generator=g), torch.randn(5, 3, generator=g)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def full(model):
    return [p.full_tensor() if hasattr(p, 'full_tensor') else p.detach().clone() for p in model.parameters()]


def max_difference(a, b):
    return max((x - y).abs().max().item() for x, y in zip(full(a), full(b)))


def worker(rank, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
    results = {}
    try:
        for case in CASES:
            config = case.configs[-1]
            for how in ('ddp', 'fsdp2'):
                ours_model, ref_model = wrap(make_model(), how), wrap(make_model(), how)
                ours = case.ours(ours_model.parameters(), **config)
                train(ours_model, ours, STEPS)
                train(ref_model, case.reference(ref_model.parameters(), **case.reference_kwargs(config)), STEPS)
                results[case.name, how, 'vs reference'] = max_difference(ours_model, ref_model)
                # a checkpoint of the sharded state, through torch.distributed.checkpoint's helpers
                saved = copy.deepcopy(get_optimizer_state_dict(ours_model, ours))  # as if written to disk
                resumed_model = wrap(make_model(), how)
                resumed_model.load_state_dict(ours_model.state_dict())
                resumed = case.ours(resumed_model.parameters(), **config)
                set_optimizer_state_dict(resumed_model, resumed, saved)
                train(ours_model, ours, STEPS, start=STEPS)
                train(resumed_model, resumed, STEPS, start=STEPS)
                results[case.name, how, 'resumed'] = max_difference(ours_model, resumed_model)
            # a nan on one rank's shard only: every rank must skip the step, or the replicas drift apart
            model = wrap(make_model(), 'fsdp2')
            opt = case.ours(model.parameters(), nonfinite='skip', **config)
            train(model, opt, 1)
            before = full(model)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(torch.ones(2, 6)), torch.zeros(2, 3)).backward()
            if rank == 0: next(model.parameters()).grad.to_local()[0, 0] = float('nan')
            opt.step()
            counts = [None] * WORLD
            dist.all_gather_object(counts, opt.skipped_steps)
            results[case.name, 'fsdp2', 'skipped'] = counts
            results[case.name, 'fsdp2', 'untouched'] = all(torch.equal(a, b) for a, b in zip(before, full(model)))
        if rank == 0: torch.save(results, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp('distributed') / 'results.pt'
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return torch.load(out)


@pytest.mark.parametrize('how', ['ddp', 'fsdp2'])
@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_trains_as_the_reference_and_resumes_from_a_distributed_checkpoint(results, case, how):
    assert results[case.name, how, 'vs reference'] < 1e-5
    assert results[case.name, how, 'resumed'] == 0.0


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.name)
def test_a_nan_on_one_shard_skips_the_step_on_every_rank(results, case):
    assert results[case.name, 'fsdp2', 'skipped'] == [1] * WORLD
    assert results[case.name, 'fsdp2', 'untouched']


if __name__ == '__main__':
    import tempfile
    out = tempfile.mktemp()
    mp.spawn(worker, args=(free_port(), out), nprocs=WORLD, join=True)
    for k, v in torch.load(out).items(): print(k, v)


class _Sharded(torch.Tensor):
    "Stands in for a DTensor: a tensor subclass, whose foreach ops may lack a sharding rule."


@pytest.mark.parametrize('case', [c for c in CASES if c.name in ('Adam', 'AdamW')], ids=lambda c: c.name)
def test_a_foreach_op_that_dtensor_lacks_runs_tensor_by_tensor(case, monkeypatch):
    """torch 2.11's DTensor has no sharding rule for `_foreach_maximum` (AMSGrad's): under FSDP2 the step raised
    NotImplementedError. On tensors that are not plain, such an op falls back to its one-tensor twin."""
    def _foreach_maximum(tensors, *args, **kw):  # torch 2.11 on DTensors
        if type(tensors[0]) is _Sharded: raise NotImplementedError('no sharding strategy registered')
        return original(tensors, *args, **kw)
    original = torch._foreach_maximum
    monkeypatch.setattr(torch, '_foreach_maximum', _foreach_maximum)
    torch.manual_seed(0)
    plain = [torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    sharded = [torch.Tensor._make_subclass(_Sharded, p.detach().clone(), True) for p in plain]
    config = dict(lr=0.01, amsgrad=True, weight_decay=0.1, foreach=True)
    for params in (plain, sharded):
        opt = case.ours(params, **config)
        for t in range(3):
            for p in params: p.grad = torch.full_like(p, 0.1 * (t + 1)).as_subclass(type(p))
            opt.step()
    for a, b in zip(plain, sharded): torch.testing.assert_close(a.detach(), b.detach().as_subclass(torch.Tensor))
