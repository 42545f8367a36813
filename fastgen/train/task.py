"""What a model brings to the run loop: a task (GANTask, VAETask) owns its models, optimizers
and loss scaling, computes one training step, draws its sample grids and hands the evaluator
its models; fastgen.train.loop does the rest, the same for every model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from fastgen.train.precision import Precision, losses_finite
from fastgen.train.resume import restore_training_state
from fastgen.train.rng import mix_seed

Batch = tuple[torch.Tensor, torch.Tensor | None]  # (images [B, C, R, R] in [-1, 1], labels [B])
Accept = Callable[[dict[str, torch.Tensor]], bool]


class Grid(NamedTuple):
    """One sample grid: samples/<name>, `nrow` images a row (None: square)."""

    name: str
    images: torch.Tensor
    nrow: int | None = None


class TrainingTask:
    """The base of GANTask and VAETask.

    A subclass sets, in its constructor, ``config``, ``device``, ``optimizers`` ({name:
    optimizer}), ``precision`` (a Precision with one scaler per optimizer) and ``meta`` (the
    checkpoint's "meta" entry), and defines:

    - ``models``: {name: module} as checkpoints hold them;
    - ``step(batch, step, accept)``: one training step; returns its losses (detached);
    - ``prepare(processes)``: sync BN, DistributedDataParallel and torch.compile as configured
      (until it is called, the step runs the plain models in one process);
    - ``fix_samples(sampler)``, ``sample_grids(step)``: the sample grids' fixed inputs, and
      the grids of a step;
    - ``evaluate(evaluator, step)``: calls the evaluator with the task's models.
    """

    kind: str  # "dcgan" | "vae": the checkpoint's kind, the summary's, the bar's label
    plot_keys: tuple[str, ...] = ()  # log keys drawn in losses.png
    progress_keys: tuple[str, ...] = ()  # log keys shown on the progress bar
    sample_label: str = ""  # the sample grids' "model" metadata

    config: Any
    device: torch.device
    optimizers: dict[str, torch.optim.Optimizer]
    precision: Precision
    meta: dict[str, Any]

    @property
    def models(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def step(self, batch: Batch, step: int, accept: Accept = losses_finite) -> dict:
        raise NotImplementedError

    def prepare(self, processes) -> None:
        raise NotImplementedError

    def fix_samples(self, sampler) -> None:
        raise NotImplementedError

    def sample_grids(self, step: int) -> list[Grid]:
        raise NotImplementedError

    def evaluate(self, evaluator, step: int) -> dict[str, float]:
        raise NotImplementedError

    def row_extras(self, step: int) -> dict[str, float]:
        """Values of `step` logged beside its losses (the VAE's KL weight)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's "models", "optimizers" and "scalers" entries."""
        return {
            "models": {name: model.state_dict() for name, model in self.models.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scalers": self.precision.state_dict(),
        }

    def restore(self, path, state: dict[str, Any], fn: str) -> int:
        """Loads a checkpoint's models, optimizers and scalers (and checks its "rng" entry);
        returns its step. A checkpoint that does not fit is a CheckpointError naming `path`."""
        return restore_training_state(
            path,
            state,
            models=self.models,
            optimizers=self.optimizers,
            scalers=self.precision,
            fn=fn,
        )


def fixed_noise(config, device) -> tuple[torch.Generator, torch.Tensor]:
    """(generator, z [num_samples, latent_dim]): the sample grids' latents, the same at every
    step and on resume; the generator continues for any other fixed draw."""
    generator = torch.Generator().manual_seed(mix_seed(config.seed, 0xF1ED))
    z = torch.randn(config.num_samples, config.latent_dim, generator=generator).to(device)
    return generator, z
