"""train_gan: DCGAN training with the usual stabilisers, resumable and reproducible.

One step (GANTask.step; ``s`` counts from 1; all randomness seeded from (seed, s, rank)):
  1. D step: fake = G(z); loss_D(D(aug(real)), D(aug(fake.detach()))) [+ GP] [+ R1]
     [+ LeCam]; aug is DiffAugment's (--diffaugment), then ADA's (--ada), both as configured
  2. G step: loss_G(D(aug(fake))) through the same fake images
  3. EMA: ema = d * ema + (1 - d) * G with d = min(ema_decay, (1 + s) / (10 + s)), the
     warm-up that lets the average follow the fast early changes; buffers are copied.
  4. ADA: every ada_interval steps, p moves towards E[sign(D(real))] = ada_target
     (fastgen.train.ada, which also has LeCam's term).
A non-finite loss skips its update (and never reaches a checkpoint).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim import Adam

from fastgen.checkpoint_io import CheckpointError
from fastgen.config import GANConfig
from fastgen.models.loading import build_models
from fastgen.train import losses
from fastgen.train.ada import AdaptiveAugment, LeCam
from fastgen.train.augment import augment
from fastgen.train.data_order import check_dataset
from fastgen.train.distributed import wrap_for_training
from fastgen.train.loop import require_train_extras, run_training
from fastgen.train.precision import BufferSnapshot, Precision, losses_finite, memory_format
from fastgen.train.task import Accept, Batch, Grid, TrainingTask, fixed_noise


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def ema_decay(config: GANConfig, step: int) -> float:
    return min(config.ema_decay, (1.0 + step) / (10.0 + step))


class GANTask(TrainingTask):
    """A DCGAN's generator, discriminator and EMA generator, their Adam optimizers, and the
    training step of the module docstring (`step`)."""

    kind = "dcgan"
    plot_keys = ("loss_d", "loss_g", "d_real", "d_fake", "penalty", "lecam", "ada_p")
    progress_keys = plot_keys
    sample_label = "ema generator"

    def __init__(self, config: GANConfig, device, *, channels: int = 1, num_classes: int = 0):
        self.config, self.device = config, torch.device(device)
        built = build_models(config, num_classes, channels)
        layout = memory_format(config, self.device)
        self.generator, self.discriminator, self.ema = (
            built[name].to(self.device).to(memory_format=layout)
            for name in ("generator", "discriminator", "ema")
        )
        self.ema.load_state_dict(self.generator.state_dict())
        self.ema.requires_grad_(False).eval()
        betas = (config.beta1, config.beta2)
        self.optimizers = {
            "generator": Adam(self.generator.parameters(), lr=config.lr_g, betas=betas),
            "discriminator": Adam(self.discriminator.parameters(), lr=config.lr_d, betas=betas),
        }
        self.precision = Precision(config.amp, self.device, list(self.optimizers))
        self.meta = {"num_classes": num_classes, "channels": channels, "kind": self.kind}
        self.classes = num_classes if config.conditional else 0
        self.augmentations = config.augmentations()
        self.ada = (
            AdaptiveAugment(
                target=config.ada_target, interval=config.ada_interval, kimg=config.ada_kimg,
                batch_size=config.batch_size, device=self.device,
            )
            if config.ada
            else None
        )  # fmt: skip
        self.lecam = LeCam(config.lecam, config.lecam_decay, self.device) if config.lecam else None
        # What the step calls: the models themselves until prepare() wraps them.
        self.wrapped_generator, self.wrapped_discriminator = self.generator, self.discriminator
        # Skipping D's weight gradients in the G step saves time; DDP needs a fixed set of them.
        self.toggle_discriminator = True
        self.snapshot = BufferSnapshot([self.generator, self.discriminator])

    @property
    def models(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator, "ema": self.ema}

    def prepare(self, processes) -> None:
        config = self.config
        self.generator, self.wrapped_generator = wrap_for_training(
            self.generator, config, processes
        )
        self.discriminator, self.wrapped_discriminator = wrap_for_training(
            self.discriminator, config, processes
        )
        self.toggle_discriminator = not processes.enabled
        self.snapshot = BufferSnapshot([self.generator, self.discriminator])
        if self.ada is not None:
            self.ada.processes = processes  # r_t is averaged over the ranks

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """What D sees of `images`: DiffAugment's augmentations, then ADA's (as configured)."""
        images = augment(images, self.augmentations)
        return images if self.ada is None else self.ada.augment(images)

    def step(self, batch: Batch, step: int, accept: Accept = losses_finite) -> dict:
        """One DCGAN step on `batch` (real images, labels): D update, G update, EMA update.

        `accept(losses)` says whether an update may apply (the run loop's NonFiniteGuard;
        default: the losses are finite); a refused D update skips the G update too, and a
        skipped step leaves the batch-norm statistics as they were. Returns the detached
        losses: loss_d, loss_g, d_real and d_fake (mean logits), penalty (GP and R1) if any.
        """
        config, device = self.config, self.device
        real, labels = batch
        labels = labels if config.conditional else None
        self.snapshot.take()
        n = real.shape[0]
        z = torch.randn(n, config.latent_dim, device=device)
        fake_labels = torch.randint(0, self.classes, (n,), device=device) if self.classes else None

        # 1. discriminator
        if self.toggle_discriminator:
            self.discriminator.requires_grad_(True)
        with self.precision.autocast():
            fake = _call(self.wrapped_generator, z, fake_labels)
            real_logits = _call(self.wrapped_discriminator, self.augment(real), labels)
            fake_logits = _call(
                self.wrapped_discriminator, self.augment(fake.detach()), fake_labels
            )
            loss_d = losses.discriminator_loss(
                config.loss, real_logits, fake_logits, config.label_smoothing
            )
        penalty = self.penalty(real, fake, labels)
        total_d = loss_d if penalty is None else loss_d + penalty
        lecam = None if self.lecam is None else self.lecam.penalty(real_logits, fake_logits)
        if lecam is not None:
            total_d = total_d + lecam
        if self.ada is not None:
            self.ada.observe(real_logits)
        d_ok = accept({"loss_d": total_d})
        if d_ok:
            self.precision.step("discriminator", total_d, self.optimizers["discriminator"])

        # 2. generator
        if self.toggle_discriminator:
            self.discriminator.requires_grad_(False)
        with self.precision.autocast():
            gen_logits = _call(self.wrapped_discriminator, self.augment(fake), fake_labels)
            loss_g = losses.generator_loss(config.loss, gen_logits)
        if d_ok and accept({"loss_g": loss_g}):
            self.precision.step("generator", loss_g, self.optimizers["generator"])
            # 3. EMA
            decay = ema_decay(config, step) if config.ema_decay > 0 else 0.0
            update_ema(self.ema, self.generator, decay)
        else:
            self.optimizers["generator"].zero_grad(set_to_none=True)
            self.snapshot.restore()  # the skipped step leaves no trace in the BN statistics

        values = {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": real_logits.detach().float().mean(),
            "d_fake": fake_logits.detach().float().mean(),
        }
        if penalty is not None:
            values["penalty"] = penalty.detach()
        if lecam is not None:
            values["lecam"] = lecam.detach()
        if self.ada is not None:
            self.ada.adjust(step)
        return values

    def row_extras(self, step: int) -> dict[str, float]:
        """ADA's p and r_t (as of the latest adjustment) beside the losses."""
        if self.ada is None:
            return {}
        return {"ada_p": round(self.ada.p, 6), "ada_rt": round(self.ada.rt, 6)}

    # ADA's and LeCam's state travel in the checkpoint ("ada", "lecam" entries), so a resumed
    # run goes on with the same p and anchors.
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for name, part in (("ada", self.ada), ("lecam", self.lecam)):
            if part is not None:
                state[name] = part.state_dict()
        return state

    def restore(self, path, state: dict[str, Any], fn: str) -> int:
        step = super().restore(path, state, fn)
        for name, part in (("ada", self.ada), ("lecam", self.lecam)):
            if part is None:
                continue
            if not isinstance(state.get(name), dict):
                raise CheckpointError(f"{fn}: {path} has no {name!r} entry, which --{name} needs")
            try:
                part.load_state_dict(state[name])
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"{fn}: {path}: bad {name!r} entry: {exc}") from exc
        return step

    def penalty(self, real, fake, labels) -> torch.Tensor | None:
        """The discriminator's gradient penalties: WGAN-GP's and R1, as configured."""
        config, penalty = self.config, None
        if config.loss == "wgan-gp" and config.gp_weight > 0:
            penalty = config.gp_weight * losses.gradient_penalty(
                self.discriminator, real, fake.float(), labels
            )
        if config.r1_gamma > 0:
            r1 = 0.5 * config.r1_gamma * losses.r1_penalty(self.discriminator, real, labels)
            penalty = r1 if penalty is None else penalty + r1
        return penalty

    def fix_samples(self, sampler) -> None:
        _, self.fixed_z = fixed_noise(self.config, self.device)
        self.fixed_labels = (
            torch.arange(self.config.num_samples, device=self.device) % self.classes
            if self.classes
            else None
        )

    @torch.no_grad()
    def sample_grids(self, step: int) -> list[Grid]:
        self.ema.eval()
        images = _call(self.ema, self.fixed_z, self.fixed_labels).float()
        return [Grid(f"step_{step:06d}.png", images)]

    def evaluate(self, evaluator, step: int) -> dict[str, float]:
        """evaluator(step, models): "ema" is the generator to sample (fastgen.metrics samples
        it), "generator" the trained one, "discriminator" the discriminator."""
        models = {"ema": self.ema, "generator": self.generator, "discriminator": self.discriminator}
        return evaluator(step, models)


def train_gan(
    config: GANConfig,
    dataset,
    *,
    resume: str | None = None,
    evaluator=None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Trains a DCGAN on `dataset` as `config` says; returns a summary dict.

    dataset: an ImageDataset (``.images`` [N, C, R, R] in [-1, 1], ``.labels``, ``.num_classes``)
    or any Dataset of (image, label). resume: a checkpoint to continue from (its step counts
    towards ``config.steps``). evaluator(step, models) -> dict of floats, every eval_every steps
    (models: see GANTask.evaluate). Writes config.json, log.jsonl, samples/step_XXXXXX.png (EMA
    generator, fixed noise), checkpoints/ckpt_XXXXXX.pt and losses.png under config.out_dir
    (main process only); overwrite: replace the run that folder holds instead of refusing it
    (fastgen.train.run_folder.RunFolder). SIGINT/SIGTERM stop it after the current step with
    a checkpoint, raising fastgen.train.signals.RunInterrupted.
    """
    config.validate()
    fn = "fastgen.train.train_gan"
    require_train_extras(progress, fn)
    channels = check_dataset(config, dataset)
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    if config.conditional and num_classes < 1:
        why = getattr(dataset, "unlabelled_reason", None)  # e.g. stray images in a folder
        raise ValueError(
            f"{fn}: conditional=True needs a labelled dataset" + (f"; {why}" if why else "")
        )

    def make_task(device) -> GANTask:
        return GANTask(config, device, channels=channels, num_classes=num_classes)

    return run_training(
        config, dataset, make_task, resume=resume, evaluator=evaluator, progress=progress,
        fn=fn, overwrite=overwrite,
    )  # fmt: skip


def _call(model, inputs, labels):
    return model(inputs) if labels is None else model(inputs, labels)
