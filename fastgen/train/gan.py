"""train_gan: DCGAN training with the usual stabilisers, resumable and reproducible.

One step (``s`` counts from 1; all randomness seeded from (seed, s, rank)):
  1. D step: fake = G(z); loss_D(D(aug(real)), D(aug(fake.detach()))) [+ GP] [+ R1]
  2. G step: loss_G(D(aug(fake))) through the same fake images
  3. EMA: ema = d * ema + (1 - d) * G with d = min(ema_decay, (1 + s) / (10 + s)), the
     warm-up that lets the average follow the fast early changes; buffers are copied.
A non-finite loss skips its update (and never reaches a checkpoint).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from fastgen.train import losses
from fastgen.train.augment import augment
from fastgen.train.checkpoint import (
    build_models,
    checkpoint_hash,
    load_checkpoint,
    restore_training_state,
)
from fastgen.train.config import GANConfig
from fastgen.train.runtime import (
    BatchSampler,
    BufferSnapshot,
    Distributed,
    NonFiniteGuard,
    Precision,
    Progress,
    all_finite,
    check_dataset,
    eval_log_row,
    mix_seed,
    open_run_folder,
    require_train_extras,
    rng_state,
    seed_step,
    setup_torch,
)
from fastgen.utils.devices import resolve_device


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def ema_decay(config: GANConfig, step: int) -> float:
    return min(config.ema_decay, (1.0 + step) / (10.0 + step))


def prepare_models(models: dict[str, nn.Module], config, run: Distributed) -> dict[str, nn.Module]:
    """The modules the step calls: synced BN, DDP wrapper and torch.compile as configured."""
    from torch.nn.parallel import DistributedDataParallel

    wrapped = {}
    for name, model in models.items():
        if run.enabled:
            if config.sync_bn:
                model = convert_sync_bn(model, run.device)
                models[name] = model
            ids = [run.device.index] if run.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        if config.compile:
            model = torch.compile(model)
        wrapped[name] = model
    return wrapped


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch norms synced across ranks: fastgen.nn.convert_sync for the fused ones (any
    device), then torch's SyncBatchNorm for stock ones (fused=False; CUDA only). Both share the
    layers' tensors, so optimizers built before keep working."""
    import fastgen.nn as fnn

    model = fnn.convert_sync(model)
    stock = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
    ]
    if stock and device.type != "cuda":
        raise ValueError(
            "fastgen.train: sync_bn with stock batch norms (fused=False) needs CUDA: torch's "
            "SyncBatchNorm runs on GPUs only; on CPU keep the fused layers, whose "
            "SyncBatchNormLeakyReLU2d works with gloo"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if stock else model


def train_gan(
    config: GANConfig, dataset, *, resume: str | None = None, evaluator=None, progress: bool = True
) -> dict[str, Any]:
    """Trains a DCGAN on `dataset` as `config` says; returns a summary dict.

    dataset: an ImageDataset (``.images`` [N, C, R, R] in [-1, 1], ``.labels``, ``.num_classes``)
    or any Dataset of (image, label). resume: a checkpoint to continue from (its step counts
    towards ``config.steps``). evaluator(step, models) -> dict of floats, every eval_every steps.
    Writes config.json, log.jsonl, samples/step_XXXXXX.png (EMA generator, fixed noise),
    checkpoints/ckpt_XXXXXX.pt and losses.png under config.out_dir (main process only).
    """
    config.validate()
    require_train_extras(progress, "fastgen.train.train_gan")
    channels = check_dataset(config, dataset)
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    if config.conditional and num_classes < 1:
        why = getattr(dataset, "unlabelled_reason", None)  # e.g. stray images in a folder
        raise ValueError(
            "fastgen.train.train_gan: conditional=True needs a labelled dataset"
            + (f"; {why}" if why else "")
        )
    setup_torch(config)
    run = Distributed(resolve_device(config.device, "fastgen.train"))
    try:
        return _train(config, dataset, channels, num_classes, run, resume, evaluator, progress)
    finally:
        run.close()


def _train(config, dataset, channels, num_classes, run, resume, evaluator, progress):
    device = run.device
    torch.manual_seed(config.seed)  # the initial weights
    models = build_models(config, num_classes, channels)
    generator, discriminator, ema = (
        models[k].to(device) for k in ("generator", "discriminator", "ema")
    )
    ema.load_state_dict(generator.state_dict())
    ema.requires_grad_(False).eval()
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas)
    precision = Precision(config.amp, device, ["generator", "discriminator"])

    start, state = 0, None
    if resume is not None:
        state = load_checkpoint(resume, map_location=device)
        start = restore_training_state(
            resume,
            state,
            models=models,
            optimizers={"generator": opt_g, "discriminator": opt_d},
            scalers=precision,
            fn="fastgen.train.train_gan",
        )

    folder = open_run_folder(config, run, resume, state)
    wrapped = prepare_models({"generator": generator, "discriminator": discriminator}, config, run)
    g_step, d_step = wrapped["generator"], wrapped["discriminator"]
    # Models as the checkpoint sees them (sync BN conversion may have replaced them).
    g_plain = _unwrap(g_step)
    d_plain = _unwrap(d_step)

    sampler = BatchSampler(
        dataset, config.batch_size, config.seed, device, run.rank, run.world_size
    )
    augmentations = config.augmentations()
    fixed = torch.Generator().manual_seed(mix_seed(config.seed, 0xF1ED))
    fixed_z = torch.randn(config.num_samples, config.latent_dim, generator=fixed).to(device)
    fixed_labels = (
        torch.arange(config.num_samples, device=device) % num_classes
        if config.conditional
        else None
    )
    classes = num_classes if config.conditional else 0
    guard = NonFiniteGuard(config.max_nonfinite)
    bar = Progress(
        start, config.steps, config.batch_size * run.world_size, progress and run.is_main, "dcgan"
    )
    began = time.perf_counter()
    last: dict[str, float] = {}
    last_checkpoint = None
    # Skipping D's weight gradients in the G step saves time; DDP needs a fixed set of them.
    toggle_d = not run.enabled
    snapshot = BufferSnapshot([g_plain, d_plain])

    def sample_and_log(step: int) -> None:
        images = _generate(ema, fixed_z, fixed_labels)
        folder.save_grid(
            images,
            f"step_{step:06d}.png",
            metadata={
                "model": "ema generator",
                "step": step,
                "seed": config.seed,
                "run": config.out_dir,
            },
        )

    def checkpoint(step: int):
        if not run.is_main:
            return None
        if not all_finite([g_plain, d_plain, ema]):
            print(f"fastgen.train: step {step}: non-finite weights, checkpoint not written")
            return None
        state = {
            "step": step,
            "config": config.to_dict(),
            "meta": {"num_classes": num_classes, "channels": channels, "kind": "dcgan"},
            "models": {
                "generator": g_plain.state_dict(),
                "discriminator": d_plain.state_dict(),
                "ema": ema.state_dict(),
            },
            "optimizers": {"generator": opt_g.state_dict(), "discriminator": opt_d.state_dict()},
            "scalers": precision.state_dict(),
            "rng": rng_state(config.seed, step),
        }
        return folder.write_checkpoint(step, state, config.keep_checkpoints, last_checkpoint)

    step = start
    try:
        for step in range(start + 1, config.steps + 1):
            seed_step(config.seed, step, run.rank)
            snapshot.take()
            real, labels = sampler.batch(step)
            if not config.conditional:
                labels = None
            n = real.shape[0]
            z = torch.randn(n, config.latent_dim, device=device)
            fake_labels = torch.randint(0, classes, (n,), device=device) if classes else None
            g_args = (z,) if fake_labels is None else (z, fake_labels)

            # 1. discriminator
            if toggle_d:
                d_plain.requires_grad_(True)
            with precision.autocast():
                fake = g_step(*g_args)
                real_logits = _call(d_step, augment(real, augmentations), labels)
                fake_logits = _call(d_step, augment(fake.detach(), augmentations), fake_labels)
                loss_d = losses.discriminator_loss(
                    config.loss, real_logits, fake_logits, config.label_smoothing
                )
            penalty = None
            if config.loss == "wgan-gp" and config.gp_weight > 0:
                penalty = config.gp_weight * losses.gradient_penalty(
                    d_plain, real, fake.float(), labels
                )
            if config.r1_gamma > 0:
                r1 = 0.5 * config.r1_gamma * losses.r1_penalty(d_plain, real, labels)
                penalty = r1 if penalty is None else penalty + r1
            total_d = loss_d if penalty is None else loss_d + penalty
            d_ok = guard.ok(step, {"loss_d": total_d}, run)
            if d_ok:
                precision.step("discriminator", total_d, opt_d)

            # 2. generator
            if toggle_d:
                d_plain.requires_grad_(False)
            with precision.autocast():
                gen_logits = _call(d_step, augment(fake, augmentations), fake_labels)
                loss_g = losses.generator_loss(config.loss, gen_logits)
            if d_ok and guard.ok(step, {"loss_g": loss_g}, run):
                precision.step("generator", loss_g, opt_g)
                # 3. EMA
                update_ema(ema, g_plain, ema_decay(config, step) if config.ema_decay > 0 else 0.0)
            else:
                opt_g.zero_grad(set_to_none=True)
                snapshot.restore()  # the skipped step leaves no trace in the BN statistics

            log_now = step % max(config.log_every, 1) == 0 or step == config.steps
            if log_now:
                last = {
                    "loss_d": float(loss_d.detach()),
                    "loss_g": float(loss_g.detach()),
                    "d_real": float(real_logits.detach().float().mean()),
                    "d_fake": float(fake_logits.detach().float().mean()),
                }
                if penalty is not None:
                    last["penalty"] = float(penalty.detach())
                folder.log(
                    {
                        "step": step,
                        **last,
                        "images_per_s": round(bar.images_per_second(step), 2),
                        "time_s": round(time.perf_counter() - began, 3),
                    }
                )
            bar.update(step, last if log_now else None)
            if (
                config.eval_every
                and step % config.eval_every == 0
                and evaluator is not None
                and run.is_main
            ):
                results = evaluator(step, {"generator": ema, "ema": ema, "discriminator": d_plain})
                folder.log(eval_log_row(step, evaluator, results))
            if config.sample_every and step % config.sample_every == 0 and run.is_main:
                sample_and_log(step)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                last_checkpoint = checkpoint(step) or last_checkpoint
                run.barrier()
    finally:
        bar.close()

    wall = time.perf_counter() - began
    final_sample = None
    if run.is_main:
        if not (config.checkpoint_every and step % config.checkpoint_every == 0) and step > start:
            last_checkpoint = checkpoint(step) or last_checkpoint
        if not (config.sample_every and step % config.sample_every == 0):
            sample_and_log(step)
        final_sample = folder.samples / f"step_{step:06d}.png"
        folder.plot_losses(["loss_d", "loss_g", "d_real", "d_fake", "penalty"])
    in_sync = run.in_sync([g_plain, d_plain, ema]) if run.enabled else True
    run.barrier()
    return {
        "kind": "dcgan",
        "out_dir": str(folder.root),
        "step": step,
        "steps_run": step - start,
        "wall_time_s": wall,
        "images_per_s": (step - start) * config.batch_size * run.world_size / wall
        if wall > 0
        else 0.0,
        "checkpoint": str(last_checkpoint) if last_checkpoint else None,
        "checkpoint_hash": checkpoint_hash(last_checkpoint) if last_checkpoint else None,
        "samples": str(final_sample) if final_sample else None,
        "losses": last,
        "nonfinite_steps": guard.total,
        "world_size": run.world_size,
        "ranks_in_sync": in_sync,
    }


def _call(model, images, labels):
    return model(images) if labels is None else model(images, labels)


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


@torch.no_grad()
def _generate(ema: nn.Module, z: torch.Tensor, labels) -> torch.Tensor:
    ema.eval()
    return (ema(z) if labels is None else ema(z, labels)).float()
