"`python -m modern_updates.benchmark --config full --out nbs/results/benchmark_full.json` runs the benchmark."
from .protocol import main

main()
