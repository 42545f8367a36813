"""train_vae: ConvVAE training on the negative ELBO with beta and a KL warm-up.

Step ``s`` (VAETask.step; from 1; randomness seeded from (seed, s, rank)) minimises
``recon + w_s * kl`` with ``w_s = beta * min(1, s / kl_warmup)`` and logs reconstruction,
KL, the ELBO (with the full KL, whatever w_s is) and bits per dimension.
Samples: samples/step_XXXXXX.png (decoded z ~ N(0, I), fixed) and
samples/recon_XXXXXX.png (rows of fixed inputs, each followed by its reconstruction).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Adam

from fastgen.config import VAEConfig
from fastgen.models.loading import build_models
from fastgen.train.data_order import check_dataset
from fastgen.train.distributed import wrap_for_training
from fastgen.train.loop import require_train_extras, run_training
from fastgen.train.precision import BufferSnapshot, Precision, losses_finite, memory_format
from fastgen.train.task import Accept, Batch, Grid, TrainingTask, fixed_noise


class VAELoss(nn.Module):
    """vae.loss as a forward, so DistributedDataParallel and torch.compile can wrap it."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
        return self.vae.loss(x, beta=beta)


class VAETask(TrainingTask):
    """A ConvVAE, its Adam optimizer, and the training step of the module docstring (`step`)."""

    kind = "vae"
    plot_keys = ("loss", "recon", "kl", "bits_per_dim")
    progress_keys = ("loss", "kl")
    sample_label = "vae"

    def __init__(self, config: VAEConfig, device, *, channels: int = 1) -> None:
        self.config, self.device = config, torch.device(device)
        self.vae = build_models(config, 0, channels)["vae"].to(self.device)
        self.vae.to(memory_format=memory_format(config, self.device))
        betas = (config.beta1, config.beta2)
        self.optimizers = {"vae": Adam(self.vae.parameters(), lr=config.lr, betas=betas)}
        self.precision = Precision(config.amp, self.device, ["vae"])
        self.meta = {"num_classes": 0, "channels": channels, "kind": self.kind}
        self.wrapped_loss: nn.Module = VAELoss(self.vae)  # prepare() wraps it
        self.snapshot = BufferSnapshot([self.vae])
        self.vae.train()

    @property
    def models(self) -> dict[str, nn.Module]:
        return {"vae": self.vae}

    def prepare(self, processes) -> None:
        loss, self.wrapped_loss = wrap_for_training(VAELoss(self.vae), self.config, processes)
        self.vae = loss.vae  # after sync-BN conversion
        self.snapshot = BufferSnapshot([self.vae])

    def step(self, batch: Batch, step: int, accept: Accept = losses_finite) -> dict:
        """One ELBO step on `batch` (images, labels unused) with the KL weight of `step`.

        `accept(losses)` says whether the update may apply (see GANTask.step); a skipped
        step leaves the batch-norm statistics as they were. Returns the detached
        loss, recon, kl, elbo and bits_per_dim."""
        images, _ = batch
        self.snapshot.take()
        with self.precision.autocast():
            parts = self.wrapped_loss(images, self.config.kl_weight(step))
        if accept({"loss": parts["loss"]}):
            self.precision.step("vae", parts["loss"], self.optimizers["vae"])
        else:
            self.optimizers["vae"].zero_grad(set_to_none=True)
            self.snapshot.restore()
        return {key: value.detach() for key, value in parts.items()}

    def row_extras(self, step: int) -> dict[str, float]:
        return {"kl_weight": self.config.kl_weight(step)}

    def fix_samples(self, sampler) -> None:
        generator, self.fixed_z = fixed_noise(self.config, self.device)
        pick = torch.randperm(sampler.n, generator=generator)[
            : max(1, self.config.num_samples // 2)
        ]
        self.fixed_inputs = sampler.images(pick)

    @torch.no_grad()
    def sample_grids(self, step: int) -> list[Grid]:
        vae, was_training = self.vae, self.vae.training
        vae.eval()
        try:
            samples = vae.to_image(vae.decode(self.fixed_z)).float()
            mu, _ = vae.encode(self.fixed_inputs)
            recon = vae.to_image(vae.decode(mu)).float()
        finally:
            vae.train(was_training)
        # Each input followed by its reconstruction: pairs side by side in rows of 8 pairs.
        pairs = torch.stack([self.fixed_inputs.float(), recon], dim=1).flatten(0, 1)
        return [
            Grid(f"step_{step:06d}.png", samples),
            Grid(f"recon_{step:06d}.png", pairs, nrow=16),
        ]

    def evaluate(self, evaluator, step: int) -> dict[str, float]:
        """evaluator(step, {"vae": vae}), with the VAE in eval mode for the call."""
        self.vae.eval()
        try:
            return evaluator(step, {"vae": self.vae})
        finally:
            self.vae.train()


def train_vae(
    config: VAEConfig,
    dataset,
    *,
    resume: str | None = None,
    evaluator=None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Trains a ConvVAE on `dataset` as `config` says; returns a summary dict (see train_gan)."""
    config.validate()
    fn = "fastgen.train.train_vae"
    require_train_extras(progress, fn)
    channels = check_dataset(config, dataset)

    def make_task(device) -> VAETask:
        return VAETask(config, device, channels=channels)

    return run_training(
        config, dataset, make_task, resume=resume, evaluator=evaluator, progress=progress,
        fn=fn, overwrite=overwrite,
    )  # fmt: skip
