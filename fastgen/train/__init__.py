"""Training loops for the GAN and the VAE, their configs, and checkpoints.

GANConfig, VAEConfig      dataclasses (to_dict / from_dict), the CLI's flags by name
train_gan, train_vae      (config, dataset, *, resume=None, evaluator=None, progress=True,
                          overwrite=False) -> dict
checkpoint                save/load (atomic, weights_only), latest_checkpoint, load_models

One training step is a task's ``step`` (gan.GANTask, vae.VAETask: the models, optimizers,
loss scaling, sample grids); loop.run_training is the run around it for every model (resume,
run folder, schedule, non-finite guard, progress, final checkpoint and summary), helped by
distributed (processes, DDP), data_order (BatchSampler), precision (AMP, skipped steps), rng
(seeds), run_folder, run_log (log.jsonl, losses.png) and progress. resume holds resuming a
run: the checkpoint --resume names, its config, and loading its state into a task. cli is
the `fastgen train` command.

A run writes into config.out_dir: run.json, config.json, log.jsonl, samples/step_XXXXXX.png,
checkpoints/ckpt_XXXXXX.pt and losses.png, and locks run.lock while it trains. Under torchrun
(WORLD_SIZE > 1) it trains with DistributedDataParallel and only rank 0 writes. SIGINT or
SIGTERM stops it after the current step with a checkpoint (signals.RunInterrupted).

The names below are loaded on first use, so that `fastgen train --help` (fastgen.train.cli)
imports no torch.
"""

import importlib

# public name -> the module that defines it
_HOMES = {
    "CheckpointError": "fastgen.checkpoint_io",
    "checkpoint_hash": "fastgen.checkpoint_io",
    "latest_checkpoint": "fastgen.checkpoint_io",
    "load_checkpoint": "fastgen.checkpoint_io",
    "save_checkpoint": "fastgen.checkpoint_io",
    "load_models": "fastgen.models.loading",
    "GANConfig": "fastgen.config",
    "VAEConfig": "fastgen.config",
    "config_from_dict": "fastgen.config",
    "train_gan": "fastgen.train.gan",
    "TrainingError": "fastgen.train.precision",
    "train_vae": "fastgen.train.vae",
}

__all__ = sorted([*_HOMES, "checkpoint"])


def __getattr__(name: str):
    if name == "checkpoint":  # the public alias module (fastgen.train.checkpoint)
        return importlib.import_module("fastgen.train.checkpoint")
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastgen.train' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
