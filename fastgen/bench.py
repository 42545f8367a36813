"""`fastgen bench train`: end-to-end training speed, fused layers vs stock, eager vs compiled.

    fastgen bench train [--models dcgan,vae] [--device cpu] [--resolution 32] [--batch-size 64]
                        [--steps 20] [--no-compile] [--quick] [--out benchmarks/results]

What is timed is fastgen.train's own training step, GANTask.step and VAETask.step, built
from a GANConfig / VAEConfig with the bench's resolution, batch, width, latent size and
layers and training's default hyperparameters (DCGAN: a discriminator update on a real and a
generated batch, a generator update, BCE losses, Adam, the EMA update; VAE: one ELBO step with
Adam). For each model four variants are built from the same seed, so they start from
identical weights:

    fused/eager    fastgen.nn layers (fused=True), eager
    stock/eager    the same network from stock torch.nn layers (fused=False), eager
    fused/compile  fused, the models under torch.compile (config.compile, as training does)
    stock/compile  stock, the models under torch.compile

Timing: each variant first runs ``--warmup`` steps (torch.compile compiles here, so compilation
is never timed); then each of ``--steps`` rounds runs ONE step of every variant in turn
(interleaved), so drifts of the machine (clock, other processes) hit all variants alike. Wall
time per step (CUDA: synchronised before and after); reported as the median and 20th/80th
percentiles, images/s = batch / median, and the speed-up over stock/eager of the same model.
On a shared CPU the wall time also counts the time other processes held the cores, so the
process CPU time of each step (time.process_time, all threads) is recorded too, with its own
speed-up column: run with ``--threads 1`` on a busy machine, where CPU time then equals the
time the step computed (with more threads, idle-spinning OpenMP workers add to it). A run of
fewer than MIN_STEPS timed steps, or on a machine whose load average exceeded the threads
used, ends with a one-line warning that its figures are rough. ``--quick``: 5 steps after 1
warm-up, eager only: a check that the bench runs, not a measurement.
Peak memory (CUDA only; CPU has no allocator peak counter): max_memory_allocated during one
extra step minus what was allocated before it. Inputs are a fixed random batch in [-1, 1] and
fresh noise per step, so data loading is not part of the time.

Writes benchmarks/results/bench_train_<device>_<UTC time>.csv (one row per variant, with the
device, torch version, commit and date) and prints a table. ``--profile`` additionally writes a
torch.profiler summary (top ops by self time) of a few fused/eager steps per model.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from fastgen.utils.devices import resolve_device
from fastgen.utils.run_info import device_name, git_commit, percentile
from fastgen.utils.step_timing import (
    Variant,
    measure_peak_memory,
    profile_summary,
    short_error,
    time_interleaved,
    warm_up,
)

MODELS = ("dcgan", "vae")
MIN_STEPS = 10  # fewer timed steps than this: the medians are rough
CSV_FIELDS = (
    "model",
    "layers",
    "mode",
    "resolution",
    "batch",
    "width",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "images_per_s",
    "speedup_vs_stock_eager",
    "cpu_median_ms",
    "cpu_speedup_vs_stock_eager",
    "peak_mem_mb",
    "steps",
    "threads",
    "device",
    "torch",
    "commit",
    "date",
    "error",
)


# --- one training step per model --------------------------------------------------------------


def training_step(
    model: str, *, fused, compiled, resolution, channels, batch, width, latent_dim, device, seed
) -> Callable[[], None]:
    """A closure running one training step of `model` ("dcgan" or "vae") as fastgen.train
    runs it: the task's step, its config's default hyperparameters, on one fixed batch."""
    from fastgen.train import GANConfig, VAEConfig
    from fastgen.train.distributed import Distributed
    from fastgen.train.gan import GANTask
    from fastgen.train.vae import VAETask

    settings = dict(
        resolution=resolution, channels=channels, batch_size=batch, width=width,
        latent_dim=latent_dim, fused=fused, compile=compiled, seed=seed, device=str(device),
    )  # fmt: skip
    config = GANConfig(**settings) if model == "dcgan" else VAEConfig(**settings)
    config.validate()
    torch.manual_seed(seed)  # identical initial weights in every variant
    task = (GANTask if model == "dcgan" else VAETask)(config, device, channels=channels)
    task.prepare(Distributed.single(device))  # torch.compile as configured
    real = torch.rand(batch, channels, resolution, resolution, device=device) * 2 - 1
    steps = itertools.count(1)

    def step() -> None:
        task.step((real, None), next(steps))

    return step


# --- the command ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="dcgan,vae", help="comma-separated: dcgan, vae")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--resolution", type=int, default=None, help="default 32 on CPU, 64 on GPU")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default 64 on CPU, 128 on GPU"
    )
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--width", type=int, default=None,
                        help="model width (default: DCGAN 64, VAE 32, the models' defaults)")  # fmt: skip
    parser.add_argument("--latent-dim", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None,
                        help="timed rounds, one step per variant (default 20; --quick: 5)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps per variant (default 3; --quick: 1)")  # fmt: skip
    parser.add_argument("--layers", default="fused,stock", help="comma-separated: fused, stock")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="eager variants only (torch.compile takes minutes on a small CPU)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", "--out-dir", dest="out_dir", default="benchmarks/results",
        help="folder for the CSV (--out-dir: the old name)",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="also write a profiler summary")
    parser.add_argument("--quick", action="store_true",
                        help="5 steps after 1 warm-up, eager only: checks it runs, measures little")  # fmt: skip


def _choices(fn: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(
            f"fastgen bench train: {fn} expected a subset of {','.join(allowed)}, got {text!r}"
        )
    return values


def format_table(
    variants: list[Variant],
    speedups: dict[str, float | None],
    cpu_speedups: dict[str, float | None],
) -> str:
    header = f"{'model':6s} {'layers':6s} {'mode':8s} {'median ms':>10s} {'p20-p80 ms':>17s} {'images/s':>9s} {'vs stock eager':>14s} {'cpu ms':>8s} {'cpu vs stock':>12s} {'peak MB':>8s}"
    lines = [header, "-" * len(header)]
    for v in variants:
        if not v.times_ms:
            lines.append(f"{v.model:6s} {v.layers:6s} {v.mode:8s} skipped: {v.error}")
            continue
        median = percentile(v.times_ms, 50)
        spread = f"{percentile(v.times_ms, 20):.1f}-{percentile(v.times_ms, 80):.1f}"
        speedup, cpu_speedup = speedups.get(v.name), cpu_speedups.get(v.name)
        peak = "" if v.peak_mem_mb is None else f"{v.peak_mem_mb:.0f}"
        lines.append(
            f"{v.model:6s} {v.layers:6s} {v.mode:8s} {median:10.1f} {spread:>17s} "
            f"{v.batch * 1e3 / median:9.0f} {'' if speedup is None else f'{speedup:.2f}x':>14s} "
            f"{percentile(v.cpu_ms, 50):8.1f} "
            f"{'' if cpu_speedup is None else f'{cpu_speedup:.2f}x':>12s} {peak:>8s}"
        )
    return "\n".join(lines)


def caveat(steps: int, threads: int, load: float | None) -> str | None:
    """The one-line warning of a run whose figures mean little, or None: fewer than MIN_STEPS
    timed steps, or a 1-minute load average above the threads the bench used (other
    processes held the cores; the bench itself accounts for at most `threads` of it)."""
    reasons = []
    if steps < MIN_STEPS:
        reasons.append(f"only {steps} timed steps (fewer than {MIN_STEPS})")
    if load is not None and load > threads:
        reasons.append(
            f"the machine was busy (load average {load:.1f} above the {threads} threads used)"
        )
    if not reasons:
        return None
    return f"fastgen bench train: warning: {' and '.join(reasons)}; these figures are rough"


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def run(args: argparse.Namespace) -> int:
    models = _choices("--models", args.models, MODELS)
    layer_kinds = _choices("--layers", args.layers, ("fused", "stock"))
    steps = args.steps if args.steps is not None else (5 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if steps < 1 or warmup < 0:
        raise ValueError(
            f"fastgen bench train: --steps expected >= 1 and --warmup >= 0, got {steps}, {warmup}"
        )
    device = resolve_device(args.device, "fastgen bench train")
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    resolution = args.resolution or (64 if gpu else 32)
    batch = args.batch_size or (128 if gpu else 64)
    modes = ["eager"] + (["compile"] if args.compile and not args.quick else [])
    log = print
    variants: list[Variant] = []
    widths = {}
    for model in models:
        width = args.width or (64 if model == "dcgan" else 32)
        latent_dim = args.latent_dim or (100 if model == "dcgan" else 32)
        widths[model] = width
        for mode in modes:
            for layers in layer_kinds:
                variant = Variant(model, layers, mode, None, batch)
                try:
                    variant.step = training_step(
                        model, fused=layers == "fused", compiled=mode == "compile",
                        resolution=resolution, channels=args.channels, batch=batch, width=width,
                        latent_dim=latent_dim, device=device, seed=args.seed,
                    )  # fmt: skip
                except Exception as exc:
                    variant.error = short_error(exc)
                variants.append(variant)
    log(f"fastgen bench train: {device_name(device)}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {resolution}x{resolution}, batch {batch}")  # fmt: skip
    for variant in variants:
        if variant.step is not None:
            warm_up(variant, warmup, device, log)
        else:
            log(f"  {variant.name}: skipped ({variant.error})")
    time_interleaved(variants, steps, device)
    load = load_average()
    for variant in variants:
        measure_peak_memory(variant, device)
    speedups: dict[str, float | None] = {}
    cpu_speedups: dict[str, float | None] = {}
    for v in variants:
        stock_eager = (v.model, "stock", "eager")
        base = next((b for b in variants if (b.model, b.layers, b.mode) == stock_eager), None)
        ok = bool(v.times_ms and base is not None and base.times_ms)
        speedups[v.name] = (
            percentile(base.times_ms, 50) / percentile(v.times_ms, 50) if ok else None
        )
        cpu_speedups[v.name] = (
            percentile(base.cpu_ms, 50) / percentile(v.cpu_ms, 50) if ok else None
        )
    print(format_table(variants, speedups, cpu_speedups))
    warning = caveat(steps, torch.get_num_threads(), load)
    if warning:
        print(warning, file=sys.stderr)

    now = datetime.datetime.now(datetime.timezone.utc)
    env = {
        "device": device_name(device),
        "torch": torch.__version__,
        "commit": git_commit(),
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threads": torch.get_num_threads(),
        "steps": steps,
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_train_{device.type}_{now.strftime('%Y%m%dT%H%M%SZ')}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for v in variants:
            median = percentile(v.times_ms, 50) if v.times_ms else None
            speedup, cpu_speedup = speedups.get(v.name), cpu_speedups.get(v.name)
            writer.writerow({
                "model": v.model, "layers": v.layers, "mode": v.mode, "resolution": resolution,
                "batch": batch, "width": widths[v.model],
                "median_ms": "" if median is None else f"{median:.3f}",
                "p20_ms": f"{percentile(v.times_ms, 20):.3f}" if v.times_ms else "",
                "p80_ms": f"{percentile(v.times_ms, 80):.3f}" if v.times_ms else "",
                "images_per_s": "" if median is None else f"{batch * 1e3 / median:.1f}",
                "speedup_vs_stock_eager": "" if speedup is None else f"{speedup:.3f}",
                "cpu_median_ms": f"{percentile(v.cpu_ms, 50):.3f}" if v.cpu_ms else "",
                "cpu_speedup_vs_stock_eager": "" if cpu_speedup is None else f"{cpu_speedup:.3f}",
                "peak_mem_mb": "" if v.peak_mem_mb is None else f"{v.peak_mem_mb:.1f}",
                "error": v.error, **env,
            })  # fmt: skip
    log(f"wrote {path}")
    if args.profile:
        profile_path = path.with_suffix(".profile.txt")
        with open(profile_path, "w") as f:
            for v in variants:
                if v.layers == "fused" and v.mode == "eager" and v.step is not None:
                    f.write(
                        f"== {v.name}, {resolution}x{resolution}, batch {batch}, {env['device']}\n"
                    )
                    f.write(profile_summary(v, device) + "\n\n")
        log(f"wrote {profile_path}")
    return 0
