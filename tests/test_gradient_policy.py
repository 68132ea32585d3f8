"""The gradient policy as the optimizers use it: a nan found on a kernel path is skipped on the device and, where the
flag is read a step late (a GPU), reported at the next step or state_dict(); the kernels are bound to their rule
function, not to its name."""
import pytest
import torch

from modern_updates.optim import Adam, SGD, gradients


def adam_steps(params, grads, opt):
    for g in grads:
        for p, x in zip(params, g): p.grad = x.clone()
        opt.step()


@pytest.mark.parametrize('late', [False, True], ids=['read-at-once', 'read-late'])
def test_a_nan_on_a_kernel_path_is_skipped_and_reported(late, monkeypatch):
    if late: monkeypatch.setattr(gradients, 'REPORT_LATER', {'cpu'})  # as on a GPU
    torch.manual_seed(0)
    params = [torch.randn(5, requires_grad=True), torch.randn(3, 2, requires_grad=True)]
    opt = Adam(params, lr=0.1)
    adam_steps(params, [[torch.randn_like(p) for p in params] for _ in range(2)], opt)
    assert opt._plans[0].path == 'fused'
    before = [p.detach().clone() for p in params]
    state = {k: v.clone() for k, v in opt.state[params[1]].items()}
    bad = [torch.randn_like(p) for p in params]
    bad[1][1, 0] = float('nan')
    if not late:
        with pytest.raises(RuntimeError, match=r'parameter 1 \(shape \(3, 2\)\) in param group 0'):
            adam_steps(params, [bad], opt)
    else:
        adam_steps(params, [bad], opt)  # no error yet: the kernels skipped the step on the device
    assert all(torch.equal(p, b) for p, b in zip(params, before)), 'the nan step must leave the parameters'
    assert all(torch.equal(v, state[k]) for k, v in opt.state[params[1]].items()), 'and the state'
    if late:
        with pytest.raises(RuntimeError, match='an earlier step had nan or inf gradients'):
            adam_steps(params, [[torch.randn_like(p) for p in params]], opt)
        assert all(torch.equal(p, b) for p, b in zip(params, before)), 'the raising step steps nothing'
    adam_steps(params, [[torch.randn_like(p) for p in params]], opt)  # reported once, then it steps on
    assert not torch.equal(params[0], before[0])


def test_a_late_report_is_read_by_state_dict(monkeypatch):
    "A nan at the last step of a run is not lost: the checkpoint that follows reads the flag."
    monkeypatch.setattr(gradients, 'REPORT_LATER', {'cpu'})
    p = torch.nn.Parameter(torch.ones(4))
    opt = Adam([p], lr=0.1)
    adam_steps([p], [[torch.ones(4)], [torch.ones(4)]], opt)
    adam_steps([p], [[torch.tensor([1.0, float('inf'), 1.0, 1.0])]], opt)
    with pytest.raises(RuntimeError, match='an earlier step had nan or inf'):
        opt.state_dict()
    assert opt.state_dict()['state'][0]['step'] == 2  # read once; the skipped step is not counted


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_the_default_check_on_cuda_adds_no_host_sync():
    "On a GPU the default step (nonfinite='raise', a kernel path) never waits for the device: the flag is read late."
    torch.manual_seed(0)
    params = [torch.randn(1000, device='cuda', requires_grad=True) for _ in range(4)]
    opt = Adam(params, lr=1e-3)
    adam_steps(params, [[torch.randn_like(p) for p in params] for _ in range(2)], opt)
    torch.cuda.set_sync_debug_mode('error')
    try: adam_steps(params, [[torch.randn_like(p) for p in params] for _ in range(3)], opt)
    finally: torch.cuda.set_sync_debug_mode(0)
    bad = [torch.randn_like(p) for p in params]
    bad[2][7] = float('nan')
    before = [p.detach().clone() for p in params]
    adam_steps(params, [bad], opt)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    with pytest.raises(RuntimeError, match='an earlier step had nan or inf'):
        adam_steps(params, [[torch.randn_like(p) for p in params]], opt)


def test_kernels_are_bound_to_their_rule_function_not_its_name():
    "A subclass whose own rule is named like Adam's never reaches torch's Adam kernel: it steps by its rule."
    def adam_direction(grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, betas, eps, amsgrad):
        return grad.sign()  # another rule under the same name
    class SignAdam(Adam):
        rule = staticmethod(adam_direction)
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([2.0, -3.0, 0.5])
    opt = SignAdam([p], lr=0.1)
    opt.step()
    assert opt._plans[0].path == 'foreach'
    torch.testing.assert_close(p.detach(), torch.tensor([-0.1, 0.1, -0.1]))
    with pytest.raises(RuntimeError, match='no fused kernel for adam_direction'):
        SignAdam([p], lr=0.1, fused=True).step()
    SGD([p], lr=0.1).step()  # the registered rule still finds its kernel


def test_a_flag_still_on_its_way_is_not_waited_for():
    "A step reads only the flags whose copy has arrived (it asks, without waiting); state_dict waits for the rest."
    from types import SimpleNamespace
    from modern_updates.optim.gradients import GradientPolicy, _Pending

    class Event:  # a CUDA event, as the copy's: done once synchronized
        done, waited = False, 0
        def query(self): return self.done
        def synchronize(self): self.done, self.waited = True, self.waited + 1

    groups = [dict(params=[], nonfinite='raise', max_grad_norm=None, max_grad_value=None, skipped_steps=0,
                   capturable=False)]
    policy = GradientPolicy(SimpleNamespace(param_groups=groups))
    event = Event()
    policy.pending += [_Pending(torch.tensor(0.0), None), _Pending(torch.tensor(1.0), event)]
    policy.report_pending()  # the first has arrived (fine); the second is on its way: kept, not waited for
    assert len(policy.pending) == 1 and event.waited == 0
    with pytest.raises(RuntimeError, match='an earlier step had nan or inf'):
        policy.report_pending(wait=True)
    assert not policy.pending and event.waited == 1
