"""Training loops for the GAN and the VAE, their configs, and checkpoints.

GANConfig, VAEConfig      dataclasses (to_dict / from_dict), the CLI's flags by name
train_gan, train_vae      (config, dataset, *, resume=None, evaluator=None, progress=True,
                          overwrite=False) -> dict
checkpoint                save/load (atomic, weights_only), latest_checkpoint, load_models

One training step is a task's ``step`` (gan.GANTask, vae.VAETask: the models, optimizers,
loss scaling, sample grids); loop.run_training is the run around it for every model (resume,
run folder, schedule, non-finite guard, progress, final checkpoint and summary), helped by
distributed (processes, DDP), data_order (BatchSampler), precision (AMP, skipped steps), rng
(seeds), run_folder, run_log (log.jsonl, losses.png) and progress.

A run writes into config.out_dir: run.json, config.json, log.jsonl, samples/step_XXXXXX.png,
checkpoints/ckpt_XXXXXX.pt and losses.png, and locks run.lock while it trains. Under torchrun
(WORLD_SIZE > 1) it trains with DistributedDataParallel and only rank 0 writes. SIGINT or
SIGTERM stops it after the current step with a checkpoint (signals.RunInterrupted).
"""

from fastgen.train import checkpoint
from fastgen.train.checkpoint import (
    CheckpointError,
    checkpoint_hash,
    latest_checkpoint,
    load_checkpoint,
    load_models,
    save_checkpoint,
)
from fastgen.train.config import GANConfig, VAEConfig, config_from_dict
from fastgen.train.gan import train_gan
from fastgen.train.precision import TrainingError
from fastgen.train.vae import train_vae

__all__ = [
    "CheckpointError",
    "GANConfig",
    "TrainingError",
    "VAEConfig",
    "checkpoint",
    "checkpoint_hash",
    "config_from_dict",
    "latest_checkpoint",
    "load_checkpoint",
    "load_models",
    "save_checkpoint",
    "train_gan",
    "train_vae",
]
