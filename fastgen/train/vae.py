"""train_vae: ConvVAE training on the negative ELBO with beta and a KL warm-up.

Step ``s`` (from 1; randomness seeded from (seed, s, rank)) minimises
``recon + w_s * kl`` with ``w_s = beta * min(1, s / kl_warmup)`` and logs reconstruction,
KL, the ELBO (with the full KL, whatever w_s is) and bits per dimension.
Samples: samples/step_XXXXXX.png (decoded z ~ N(0, I), fixed) and
samples/recon_XXXXXX.png (rows of fixed inputs, each followed by its reconstruction).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from fastgen.train.checkpoint import (
    build_models,
    checkpoint_hash,
    load_checkpoint,
    restore_training_state,
)
from fastgen.train.config import VAEConfig
from fastgen.train.gan import prepare_models
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


class VAELoss(nn.Module):
    """vae.loss as a forward, so DistributedDataParallel and torch.compile can wrap it."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
        return self.vae.loss(x, beta=beta)


def train_vae(
    config: VAEConfig, dataset, *, resume: str | None = None, evaluator=None, progress: bool = True
) -> dict[str, Any]:
    """Trains a ConvVAE on `dataset` as `config` says; returns a summary dict (see train_gan)."""
    config.validate()
    require_train_extras(progress, "fastgen.train.train_vae")
    channels = check_dataset(config, dataset)
    setup_torch(config)
    run = Distributed(resolve_device(config.device, "fastgen.train"))
    try:
        return _train(config, dataset, channels, run, resume, evaluator, progress)
    finally:
        run.close()


def _train(config, dataset, channels, run, resume, evaluator, progress):
    device = run.device
    torch.manual_seed(config.seed)
    models = build_models(config, 0, channels)
    vae = models["vae"].to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    precision = Precision(config.amp, device, ["vae"])
    start, state = 0, None
    if resume is not None:
        state = load_checkpoint(resume, map_location=device)
        start = restore_training_state(
            resume,
            state,
            models={"vae": vae},
            optimizers={"vae": optimizer},
            scalers=precision,
            fn="fastgen.train.train_vae",
        )

    folder = open_run_folder(config, run, resume, state)
    loss_module = prepare_models({"vae": VAELoss(vae)}, config, run)["vae"]
    vae = _plain_vae(loss_module, vae)

    sampler = BatchSampler(
        dataset, config.batch_size, config.seed, device, run.rank, run.world_size
    )
    fixed = torch.Generator().manual_seed(mix_seed(config.seed, 0xF1ED))
    fixed_z = torch.randn(config.num_samples, config.latent_dim, generator=fixed).to(device)
    pick = torch.randperm(sampler.n, generator=fixed)[: max(1, config.num_samples // 2)]
    fixed_inputs = sampler.images(pick)
    guard = NonFiniteGuard(config.max_nonfinite)
    bar = Progress(
        start, config.steps, config.batch_size * run.world_size, progress and run.is_main, "vae"
    )
    began = time.perf_counter()
    last: dict[str, float] = {}
    last_checkpoint = None
    snapshot = BufferSnapshot([vae])

    def sample_and_log(step: int) -> None:
        meta = {"model": "vae", "step": step, "seed": config.seed, "run": config.out_dir}
        with torch.no_grad():
            was_training = vae.training
            vae.eval()
            samples = vae.to_image(vae.decode(fixed_z)).float()
            mu, _ = vae.encode(fixed_inputs)
            recon = vae.to_image(vae.decode(mu)).float()
            vae.train(was_training)
        folder.save_grid(samples, f"step_{step:06d}.png", metadata=meta)
        # Each input followed by its reconstruction: pairs side by side in rows of 8 pairs.
        pairs = torch.stack([fixed_inputs.float(), recon], dim=1).flatten(0, 1)
        folder.save_grid(pairs, f"recon_{step:06d}.png", nrow=16, metadata=meta)

    def checkpoint(step: int):
        if not run.is_main:
            return None
        if not all_finite([vae]):
            print(f"fastgen.train: step {step}: non-finite weights, checkpoint not written")
            return None
        state = {
            "step": step,
            "config": config.to_dict(),
            "meta": {"num_classes": 0, "channels": channels, "kind": "vae"},
            "models": {"vae": vae.state_dict()},
            "optimizers": {"vae": optimizer.state_dict()},
            "scalers": precision.state_dict(),
            "rng": rng_state(config.seed, step),
        }
        return folder.write_checkpoint(step, state, config.keep_checkpoints, last_checkpoint)

    step = start
    vae.train()
    try:
        for step in range(start + 1, config.steps + 1):
            seed_step(config.seed, step, run.rank)
            snapshot.take()
            images, _ = sampler.batch(step)
            weight = config.kl_weight(step)
            with precision.autocast():
                parts = loss_module(images, weight)
            if guard.ok(step, {"loss": parts["loss"]}, run):
                precision.step("vae", parts["loss"], optimizer)
            else:
                optimizer.zero_grad(set_to_none=True)
                snapshot.restore()
            log_now = step % max(config.log_every, 1) == 0 or step == config.steps
            if log_now:
                last = {k: float(v.detach()) for k, v in parts.items()}
                folder.log(
                    {
                        "step": step,
                        **last,
                        "kl_weight": weight,
                        "images_per_s": round(bar.images_per_second(step), 2),
                        "time_s": round(time.perf_counter() - began, 3),
                    }
                )
            bar.update(step, {k: last[k] for k in ("loss", "kl")} if log_now else None)
            if (
                config.eval_every
                and step % config.eval_every == 0
                and evaluator is not None
                and run.is_main
            ):
                vae.eval()
                results = evaluator(step, {"vae": vae})
                vae.train()
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
        folder.plot_losses(["loss", "recon", "kl", "bits_per_dim"])
    in_sync = run.in_sync([vae]) if run.enabled else True
    run.barrier()
    return {
        "kind": "vae",
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


def _plain_vae(loss_module: nn.Module, vae: nn.Module) -> nn.Module:
    inner = getattr(loss_module, "_orig_mod", loss_module)
    inner = getattr(inner, "module", inner)
    return getattr(inner, "vae", vae)
