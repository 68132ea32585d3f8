"""The Triton step's launch shape on a GPU: time `triton_step` alone (gradients kept) for each BLOCK and
num_warps, at the benchmark's full shapes, as a fraction of the copy-bandwidth roof. Prints a table and writes
it to --out (appendix D reads nbs/results/tune_cuda.json); the kernel's default is BLOCK=1024 with Triton's
default of 4 warps. A maintainer's tool, for a CUDA machine."""
import argparse, datetime, json
from pathlib import Path

import torch
import triton
from modern_updates.optim import triton_step as ts
from modern_updates.benchmark.speed import SHAPES, copy_bandwidth

CONFIGS = [(1024, 4), (1024, 8), (2048, 4), (2048, 8), (4096, 8), (4096, 16)]
make_kernel, plan_defaults = ts._step_kernel, ts._Plan.__init__.__defaults__


class _Warps:
    "The cached kernel, launched with `num_warps` added."
    def __init__(self, kernel, warps): self.kernel, self.warps = kernel, warps
    def __getitem__(self, grid):
        launch = self.kernel[grid]
        return lambda *args, **kwargs: launch(*args, num_warps=self.warps, **kwargs)


def fraction(rule, shape, block, warps, bandwidth):
    ts._Plan.__init__.__defaults__ = (block,)
    ts._step_kernel = lambda: _Warps(make_kernel(), warps)
    try:
        count, numel = shape
        result = ts.bench_triton_step(rule, (numel,) * count, repeats=20)
    finally:
        ts._step_kernel, ts._Plan.__init__.__defaults__ = make_kernel, plan_defaults
    return result['bytes'] / bandwidth / (result['ms'] / 1e3)


parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument('--rules', nargs='+', default=['adam_direction', 'sgd_direction'])
parser.add_argument('--out', default='gpu-results/tune_cuda.json')
args = parser.parse_args()
bandwidth = copy_bandwidth(torch.device('cuda'))
names = [f'{b}/{w}' for b, w in CONFIGS]  # elements per block / warps
print(f'{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s')
print(f"{'rule':<18} {'shape':>12} " + ' '.join(n.rjust(8) for n in names))
rows = []
for rule in args.rules:
    for shape in SHAPES['full']:
        cells = [fraction(rule, shape, b, w, bandwidth) for b, w in CONFIGS]
        rows.append(dict(rule=rule, shape=list(shape), roof_fraction=dict(zip(names, cells))))
        print(f"{rule:<18} {'{}x{}'.format(*shape):>12} " + ' '.join(f'{c:8.2f}' for c in cells), flush=True)
out = Path(args.out)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(dict(
    device_name=torch.cuda.get_device_name(), date=datetime.date.today().isoformat(),
    torch=torch.__version__, triton=triton.__version__, copy_bandwidth_gb_s=bandwidth / 1e9,
    default='1024/4', rows=rows), indent=1) + '\n')
print(f'wrote {out}')
