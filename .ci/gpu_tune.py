"""The Triton step's launch shape on a GPU: time `triton_step` alone (gradients kept) for each BLOCK and
num_warps, at the benchmark's full shapes, as a fraction of the copy-bandwidth roof. Prints a table; the
kernel's default is BLOCK=1024 with Triton's default of 4 warps. A maintainer's tool, for a CUDA machine."""
import sys, torch
from modern_updates.optim import triton_step as ts
from modern_updates.benchmark.speed import SHAPES, copy_bandwidth

RULES = sys.argv[1:] or ['adam_direction', 'sgd_direction']
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


bandwidth = copy_bandwidth(torch.device('cuda'))
print(f'{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s')
print(f"{'rule':<18} {'shape':>12} " + ' '.join(f'{b}/{w}'.rjust(8) for b, w in CONFIGS))
for rule in RULES:
    for shape in SHAPES['full']:
        cells = [fraction(rule, shape, b, w, bandwidth) for b, w in CONFIGS]
        print(f"{rule:<18} {'{}x{}'.format(*shape):>12} " + ' '.join(f'{c:8.2f}' for c in cells), flush=True)
