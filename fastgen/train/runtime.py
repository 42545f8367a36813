"""Former home of the trainers' runtime, now split by concern: distributed (processes),
data_order (BatchSampler), precision (AMP, non-finite steps), rng (seeds), run_folder,
run_log, progress, loop. What stays here are the names code outside fastgen.train imports
from this module: fastgen.train.checkpoint (restore_rng) and fastgen.cli (TrainingError)."""

from fastgen.train.precision import TrainingError
from fastgen.train.rng import restore_rng

__all__ = ["TrainingError", "restore_rng"]
