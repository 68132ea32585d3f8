"""The host's share of a step on a GPU: time per step at tiny tensors, where the GPU has almost nothing to do.

For 200 and 2000 tensors of 16 elements: torch's fused step, ours eager (`nonfinite='ignore'`), ours with the
Triton launch stubbed out (our Python alone), and `triton_step` alone, with and without its launch; then torch's
fused step and ours where every other step half the tensors have no gradient (experts without tokens), gradients
set included. Prints µs per step; with --out, writes them as JSON. A maintainer's tool: `bash .ci/gpu` runs it."""
import argparse, contextlib, itertools, json, time

import torch

from modern_updates import optim
from modern_updates.optim import triton_step as ts


class _Stub:  # a launch that does nothing: what is left is the host's Python
    def __getitem__(self, grid): return lambda *args, **kwargs: None


@contextlib.contextmanager
def _no_launch():
    "The Triton step with its kernel launch stubbed out."
    kernel = ts._step_kernel
    ts._step_kernel = _Stub
    try: yield
    finally: ts._step_kernel = kernel


def per_step_us(step, steps=50, rounds=7):
    best = float('inf')
    for _ in range(rounds):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps): step()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / steps)
    return 1e6 * best


def _setup(make, count, numel=16):
    params = [torch.zeros(numel, device='cuda', requires_grad=True) for _ in range(count)]
    for p in params: p.grad = torch.randn_like(p)
    opt = make(params)
    for _ in range(3): opt.step()
    return opt


def _with_subsets(opt):
    "A step in which, every other time, the odd tensors have no gradient."
    params = opt.param_groups[0]['params']
    grads, count = [p.grad for p in params], itertools.count()
    def step():
        some = next(count) % 2
        for i, (p, g) in enumerate(zip(params, grads)): p.grad = None if some and i % 2 else g
        opt.step()
    for _ in range(4): step()  # a plan for each subset
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out')
    args = parser.parse_args(argv)
    ts._step_kernel()  # defined, with triton.language imported, which the stubbed step reads
    rows = []
    for count in (200, 2000):
        for name, ours, ref in [('Adam', optim.Adam, torch.optim.Adam), ('SGD', optim.SGD, torch.optim.SGD)]:
            kw = dict(lr=1e-3, momentum=0.9) if name == 'SGD' else dict(lr=1e-3)
            row = dict(optimizer=name, tensors=count)
            row['torch_fused_us'] = per_step_us(_setup(lambda ps: ref(ps, fused=True, **kw), count).step)
            opt = _setup(lambda ps: ours(ps, nonfinite='ignore', **kw), count)
            row['ours_us'] = per_step_us(opt.step)
            with _no_launch(): row['ours_no_launch_us'] = per_step_us(opt.step)
            bench = lambda: 1e3 * ts.bench_triton_step(ours.rule.__name__, (16,) * count, repeats=200)['ms']
            row['triton_step_us'] = bench()
            with _no_launch(): row['triton_step_no_launch_us'] = bench()
            row['torch_fused_subsets_us'] = per_step_us(
                _with_subsets(_setup(lambda ps: ref(ps, fused=True, **kw), count)))
            row['ours_subsets_us'] = per_step_us(_with_subsets(opt))
            rows.append(row)
            print(' '.join(f'{k}={v:.1f}' if isinstance(v, float) else f'{k}={v}' for k, v in row.items()), flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
