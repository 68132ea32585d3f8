"A small optimizer benchmark after Schmidt et al. (2021): DeepOBS-style test problems and a tuning protocol."
from .problems import PROBLEMS, Problem, make_problem
from .protocol import (CONFIGS, OPTIMIZER_SPECS, RunOptimizer, available_optimizers, benchmark_pair, load_results,
                       main, make_optimizer, run_benchmark, sample_hparams, save_results, steps_to_target, train_run)
