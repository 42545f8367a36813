"""`fastgen bench train`: training speed, fused layers vs stock, measured the way users run.

    fastgen bench train [--models dcgan,vae] [--layers fused,stock] [--amp none,bf16]
                        [--no-compile] [--rounds 2] [--steps N] [--warmup W] [--threads T]
                        [--width 32] [--resolution 32] [--batch-size 64]
                        [--main-job [--data digits] | --in-process] [--quick] [--profile]
                        [--out benchmarks/results]

Variants: each model (dcgan, vae) x layers (fused: fastgen.nn, the default of `fastgen
train`; stock: torch.nn, `--no-fused`) x mode (eager; compile: the models under
torch.compile, `--compile`) x amp (none: float32; bf16: bfloat16 autocast, `--amp bf16`;
fp16 on request). Every variant is built from the same seed, so all start from identical
weights. The defaults are the main job's (`fastgen train`'s, read from its configs, on every
device): 32x32, width 32, batch 64, latent size 100 (DCGAN) and 32 (VAE).

What is timed:
  default     fastgen.train's own training step, GANTask.step / VAETask.step, built from a
              GANConfig / VAEConfig with the bench's sizes and amp (the trainer's Precision
              runs the autocast, as `fastgen train --amp bf16` does) and training's default
              hyperparameters, on one fixed batch in [-1, 1] with fresh noise per step (no
              data loading). Each child process builds one variant, runs --warmup untimed
              steps (torch.compile compiles there), then times --steps steps one by one
              (default 20 after 3; wall and process CPU time per step).
  --main-job  the real command, `python -m fastgen train MODEL --data digits --steps W+N
              --sample-every 0 --checkpoint-every 0 --quiet --out TMP` with --amp, --no-fused,
              --compile, --resolution, --batch-size, --width, --latent-dim, --threads,
              --device, --seed passed through (default N = 200 after W = 20). The time is
              read from the run's log.jsonl: each training row's time_s is the wall time
              since the loop began, logged every gcd(W, 10) steps (10, the main job's own
              --log-every, unless W is not a multiple of it), so the differences between
              rows from step W on count all a step of the run does (data loading, per-step
              seeding, the step, EMA, logging) and none of the start-up (imports, loading
              the data set, torch.compile's compilation) or of the end (final checkpoint,
              samples, plot). A per-step time is one logged interval's time / its steps.
  --in-process  the old setting, not what users run: all variants built in this one
              process, and each of --steps rounds runs one step of every variant in turn.
              What one variant did in the process (a compile, another model) changes the
              others' times (issue 23: the fused DCGAN step measured 1.14x stock alone, 0.88x
              with compiled variants beside it); kept to compare with earlier figures.

Processes and rounds (default and --main-job): each of --rounds rounds (default 2) starts one
fresh process per variant, in alternating order (A B C D, then D C B A, ...), so a drift of
the machine hits all variants alike; a variant's per-step times of all rounds are pooled.
--threads T sets torch's threads in every child (--main-job: `fastgen train --threads T`);
0 leaves torch's default. A child that fails is reported in its row, never fatal.

Reported per variant: the median and 20th/80th percentiles of the per-step time, images/s =
batch / median, run images/s = all images of the timed steps / their wall time, the speed-up
over stock/eager with the same amp, and over the fastest stock variant of the model (the
least median of stock x eager/compile x every amp that ran, named in fastest_stock: the
configuration a user could pick instead of fastgen). Then one verdict line per model: its
best fused variant against its fastest stock one. Process CPU time per step is recorded too
(not with --main-job), with its own speed-up column: on a shared CPU the wall time counts the
time other processes held the cores; run with --threads 1 on a busy machine. Peak memory
(CUDA only): max_memory_allocated during one extra step minus what was allocated before it.
A run of fewer than 10 timed steps, or on a machine whose load average exceeded the
threads used, ends with a one-line warning that its figures are rough. --quick: 5 steps after
1 warm-up, 1 round, eager only: a check that the bench runs, not a measurement.

Writes benchmarks/results/bench_train_<device>_<UTC time>.csv (--main-job:
bench_main_job_<device>_...; one row per variant, with the CPU model, the capability of
fastgen's CPU kernels and whether the CPU has avx512_bf16, FASTGEN_CPU_CAPABILITY, threads,
torch, commit, date and every setting) and prints the table and verdicts. --profile also
writes a torch.profiler summary (top ops by self time) of a few fused/eager steps per model,
run in this process after the timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fastgen.config import MEMORY_FORMATS, GANConfig, VAEConfig
from fastgen.utils.bench_report import (
    caveat,
    compare,
    format_table,
    load_average,
    machine_fields,
    verdicts,
    write_csv,
)
from fastgen.utils.devices import resolve_device
from fastgen.utils.process_timing import (
    child_env,
    log_step_times,
    round_order,
    run_child,
    train_arguments,
)
from fastgen.utils.run_info import device_name, percentile
from fastgen.utils.step_timing import (
    Variant,
    measure_peak_memory,
    profile_summary,
    short_error,
    time_interleaved,
    warm_up,
)

MODELS = ("dcgan", "vae")
AMP_MODES = ("none", "bf16", "fp16")
CONFIGS = {"dcgan": GANConfig, "vae": VAEConfig}


def train_default(field: str, model: str = "dcgan"):
    """`fastgen train MODEL`'s default for a config field: the bench's defaults are the main
    job's, read from the configs so the two never drift apart."""
    return next(f.default for f in dataclasses.fields(CONFIGS[model]) if f.name == field)


LATENT_DIMS = {model: train_default("latent_dim", model) for model in MODELS}


# --- one training step per model --------------------------------------------------------------


def training_step(
    model: str, *, fused, compiled, resolution, channels, batch, width, latent_dim, device, seed,
    amp: str = "none", memory_format: str = "auto",
) -> Callable[[], None]:  # fmt: skip
    """A closure running one training step of `model` ("dcgan" or "vae") as fastgen.train
    runs it: the task's step, its config's default hyperparameters and its amp, on one fixed
    batch."""
    from fastgen.train.distributed import Distributed
    from fastgen.train.gan import GANTask
    from fastgen.train.vae import VAETask

    settings = dict(
        resolution=resolution, channels=channels, batch_size=batch, width=width,
        latent_dim=latent_dim, fused=fused, compile=compiled, seed=seed, device=str(device),
        amp="" if amp == "none" else amp, memory_format=memory_format,
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


# --- the command's arguments ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="dcgan,vae", help="comma-separated: dcgan, vae")
    parser.add_argument("--layers", default="fused,stock", help="comma-separated: fused, stock")
    parser.add_argument("--amp", default="none,bf16",
                        help="comma-separated: none, bf16, fp16 (the trainer's --amp)")  # fmt: skip
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="eager variants only (torch.compile takes minutes on a small CPU)")  # fmt: skip
    parser.add_argument("--main-job", action="store_true",
                        help="time `fastgen train` itself (images/s after a warm-up)")  # fmt: skip
    parser.add_argument("--in-process", action="store_true",
                        help="the old setting, not what users run: all variants in this one process")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=None,
                        help="one process per variant per round (default 2; --quick: 1)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per process (default 20; --main-job 200; --quick 5)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default 3; --main-job 20; --quick 1)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads in every variant (0: torch's default)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    resolution, batch, width = (train_default(f) for f in ("resolution", "batch_size", "width"))
    parser.add_argument("--resolution", type=int, default=resolution,
                        help=f"image size (default {resolution}, fastgen train's)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=batch,
                        help=f"images per step (default {batch}, fastgen train's)")  # fmt: skip
    parser.add_argument("--width", type=int, default=width,
                        help=f"model width (default {width}, fastgen train's)")  # fmt: skip
    parser.add_argument("--latent-dim", type=int, default=None,
                        help="default: the trainers' (DCGAN 100, VAE 32)")  # fmt: skip
    parser.add_argument("--channels", type=int, default=None,
                        help="image channels (default 1; --main-job: the data's)")  # fmt: skip
    parser.add_argument("--data", default="digits", help="--main-job's training data")
    parser.add_argument("--memory-format", default="auto", choices=MEMORY_FORMATS,
                        help="the trainers' --memory-format in every variant (default auto)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", "--out-dir", dest="out_dir", default="benchmarks/results",
        help="folder for the CSV (--out-dir: the old name)",
    )  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="also write a profiler summary")
    parser.add_argument("--quick", action="store_true",
                        help="5 steps after 1 warm-up, 1 round, eager only: checks it runs")  # fmt: skip
    # a child process timing one variant: its settings (JSON) and the file for its timings
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_result", default=None, help=argparse.SUPPRESS)


def _choices(flag: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(
            f"fastgen bench train: {flag} expected a subset of {','.join(allowed)}, got {text!r}"
        )
    return values


@dataclass
class Setup:
    """What every variant of one bench run shares."""

    timing: str  # "processes" | "main-job" | "in-process"
    device: torch.device
    resolution: int
    batch: int
    channels: int | None  # None: 1 for the step, the data's for --main-job
    width: int
    latent_dim: int | None  # None: the trainer's default
    steps: int
    warmup: int
    rounds: int
    threads: int  # 0: torch's default
    seed: int
    data: str
    memory_format: str = "auto"


def setup_from(args: argparse.Namespace) -> Setup:
    """The run's settings from the arguments; a wrong one is a ValueError naming its flag."""
    if args.main_job and args.in_process:
        raise ValueError("fastgen bench train: --main-job and --in-process exclude each other")
    timing = "main-job" if args.main_job else "in-process" if args.in_process else "processes"
    default_steps, default_warmup = (200, 20) if args.main_job else (20, 3)
    steps = args.steps if args.steps is not None else 5 if args.quick else default_steps
    warmup = args.warmup if args.warmup is not None else 1 if args.quick else default_warmup
    rounds = args.rounds if args.rounds is not None else 1 if args.quick else 2
    least = {"--steps": 1, "--warmup": 1 if args.main_job else 0, "--rounds": 1,
             "--threads": 0, "--width": 1}  # fmt: skip
    given = {"--steps": steps, "--warmup": warmup, "--rounds": rounds,
             "--threads": args.threads, "--width": args.width}  # fmt: skip
    for flag, value in given.items():
        if value < least[flag]:
            why = " with --main-job" if flag == "--warmup" and args.main_job else ""
            raise ValueError(
                f"fastgen bench train: {flag} expected >= {least[flag]}{why}, got {value}"
            )
    device = resolve_device(args.device, "fastgen bench train")
    return Setup(
        timing=timing, device=device, resolution=args.resolution,
        batch=args.batch_size, channels=args.channels,
        width=args.width, latent_dim=args.latent_dim, steps=steps, warmup=warmup,
        rounds=1 if args.in_process else rounds, threads=args.threads, seed=args.seed,
        data=args.data, memory_format=args.memory_format,
    )  # fmt: skip


def variants_of(args: argparse.Namespace, setup: Setup) -> list[Variant]:
    models = _choices("--models", args.models, MODELS)
    layer_kinds = _choices("--layers", args.layers, ("fused", "stock"))
    amps = _choices("--amp", args.amp, AMP_MODES)
    modes = ["eager"] + (["compile"] if args.compile and not args.quick else [])
    return [
        Variant(model, layers, mode, None, setup.batch, amp=amp)
        for model in models for mode in modes for amp in amps for layers in layer_kinds
    ]  # fmt: skip


# --- timing: in child processes, the main job's command, or in this process --------------------


def _step_of(variant: Variant, setup: Setup) -> Callable[[], None]:
    return training_step(
        variant.model, fused=variant.layers == "fused", compiled=variant.mode == "compile",
        amp=variant.amp, resolution=setup.resolution, channels=setup.channels or 1,
        batch=setup.batch, width=setup.width,
        latent_dim=setup.latent_dim or LATENT_DIMS[variant.model], device=setup.device,
        seed=setup.seed, memory_format=setup.memory_format,
    )  # fmt: skip


def time_in_child(spec: dict) -> dict:
    """A child's work: build the variant `spec` names, warm it up, time its steps; the
    timings as a JSON-able dict."""
    setup = Setup(**{**spec["setup"], "device": torch.device(spec["setup"]["device"])})
    if setup.threads:
        torch.set_num_threads(setup.threads)
    variant = Variant(spec["model"], spec["layers"], spec["mode"], None, setup.batch, spec["amp"])
    started = time.perf_counter()
    try:
        variant.step = _step_of(variant, setup)
    except Exception as exc:  # e.g. an amp this device cannot run: reported in the row
        variant.error = short_error(exc)
    if variant.step is not None:
        warm_up(variant, setup.warmup, setup.device, log=lambda line: None)
    warmup_s = time.perf_counter() - started
    if variant.step is not None:
        time_interleaved([variant], setup.steps, setup.device)
        measure_peak_memory(variant, setup.device)
    return {
        "times_ms": variant.times_ms, "cpu_ms": variant.cpu_ms, "run_s": variant.run_s,
        "run_steps": variant.run_steps, "peak_mem_mb": variant.peak_mem_mb,
        "error": variant.error, "warmup_s": warmup_s,
    }  # fmt: skip


def _child_main(args: argparse.Namespace) -> int:
    from fastgen.utils.heap import keep_freed_memory

    keep_freed_memory()  # as `fastgen train` does, so the timed step is the one it runs
    result = time_in_child(json.loads(args._child))
    Path(args._result).write_text(json.dumps(result))
    return 0


def _time_step_in_child(variant: Variant, setup: Setup, workdir: Path, env: dict) -> dict:
    """Times the training step of `variant` in a fresh process (`fastgen bench train
    --_child`, time_in_child); its timings, or {"error": ...}."""
    result_path = workdir / "result.json"
    spec = {
        "model": variant.model, "layers": variant.layers, "mode": variant.mode,
        "amp": variant.amp, "setup": {**setup.__dict__, "device": str(setup.device)},
    }  # fmt: skip
    arguments = ["bench", "train", "--_child", json.dumps(spec), "--_result", str(result_path)]
    code, last_line = run_child(arguments, env)
    if code != 0 or not result_path.exists():
        return {"error": f"child exited with {code}: {last_line}"}
    return json.loads(result_path.read_text())


def _time_main_job(variant: Variant, setup: Setup, workdir: Path, env: dict) -> dict:
    """Times `fastgen train` as `variant` runs it, from its log.jsonl; the timings, or
    {"error": ...}."""
    from fastgen.train.run_log import read_log

    out_dir = workdir / "run"
    settings = dict(
        data=setup.data, resolution=setup.resolution, batch_size=setup.batch,
        width=setup.width, latent_dim=setup.latent_dim, channels=setup.channels,
        threads=setup.threads or None, device=str(setup.device), seed=setup.seed,
        memory_format=setup.memory_format,
    )  # fmt: skip
    arguments = train_arguments(
        variant.model, layers=variant.layers, mode=variant.mode, amp=variant.amp,
        steps=setup.steps, warmup=setup.warmup, out_dir=str(out_dir), settings=settings,
    )  # fmt: skip
    code, last_line = run_child(arguments, env)
    if code != 0:
        return {"error": f"fastgen train exited with {code}: {last_line}"}
    per_step, run_s, run_steps = log_step_times(read_log(out_dir / "log.jsonl"), setup.warmup)
    return {"times_ms": per_step, "run_s": run_s, "run_steps": run_steps}


def time_in_processes(variants: list[Variant], setup: Setup, log) -> None:
    """Each round runs every variant once in a process of its own, in alternating order;
    a variant's timings of every round are pooled."""
    env = child_env()
    time_one = _time_main_job if setup.timing == "main-job" else _time_step_in_child
    for round_index in range(setup.rounds):
        for variant in round_order(variants, round_index):
            started = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="fastgen-bench-") as workdir:
                try:
                    result = time_one(variant, setup, Path(workdir), env)
                except (OSError, ValueError) as exc:  # e.g. a log without the rows needed
                    result = {"error": short_error(exc)}
            variant.times_ms += result.get("times_ms", [])
            variant.cpu_ms += result.get("cpu_ms", [])
            variant.run_s += result.get("run_s", 0.0)
            variant.run_steps += result.get("run_steps", 0)
            if result.get("peak_mem_mb") is not None:
                variant.peak_mem_mb = max(variant.peak_mem_mb or 0.0, result["peak_mem_mb"])
            if result.get("error"):
                variant.error = variant.error or result["error"]
            median = percentile(result["times_ms"], 50) if result.get("times_ms") else None
            shown = f"median {median:.1f} ms/step" if median else f"failed: {result['error']}"
            log(f"  round {round_index + 1}/{setup.rounds} {variant.name}: {shown} "
                f"({time.perf_counter() - started:.1f} s in all)")  # fmt: skip


def time_in_this_process(variants: list[Variant], setup: Setup, log) -> None:
    """The old setting: every variant built here, each step round visits all in turn."""
    if setup.threads:
        torch.set_num_threads(setup.threads)
    for variant in variants:
        try:
            variant.step = _step_of(variant, setup)
        except Exception as exc:
            variant.error = short_error(exc)
            log(f"  {variant.name}: skipped ({variant.error})")
            continue
        warm_up(variant, setup.warmup, setup.device, log)
    time_interleaved(variants, setup.steps, setup.device)
    for variant in variants:
        measure_peak_memory(variant, setup.device)


def write_profile(path: Path, variants: list[Variant], setup: Setup, log) -> None:
    """A profiler summary of a few fused/eager steps of each model, run in this process."""
    if setup.threads:
        torch.set_num_threads(setup.threads)
    with open(path, "w") as f:
        for model in dict.fromkeys(v.model for v in variants):
            variant = Variant(model, "fused", "eager", None, setup.batch)
            try:
                variant.step = _step_of(variant, setup)
            except Exception as exc:
                f.write(f"== {variant.name}: {short_error(exc)}\n\n")
                continue
            warm_up(variant, 1, setup.device, log)
            if variant.step is not None:
                f.write(f"== {variant.name}, {setup.resolution}x{setup.resolution}, "
                        f"batch {setup.batch}, {device_name(setup.device)}\n")  # fmt: skip
                f.write(profile_summary(variant, setup.device) + "\n\n")


# --- the command ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if args._child is not None:
        return _child_main(args)
    setup = setup_from(args)
    variants = variants_of(args, setup)
    log = print
    threads = setup.threads or torch.get_num_threads()
    where = {"processes": "one process per variant and round", "in-process": "all variants "
             "in this process (--in-process)", "main-job": "`fastgen train`, one process per "
             "variant and round (--main-job)"}[setup.timing]  # fmt: skip
    log(f"fastgen bench train: {device_name(setup.device)}, torch {torch.__version__}, "
        f"{threads} threads, {setup.resolution}x{setup.resolution}, batch {setup.batch}, "
        f"width {setup.width}; {where}")  # fmt: skip
    if setup.timing == "in-process":
        time_in_this_process(variants, setup, log)
    else:
        time_in_processes(variants, setup, log)
    load = load_average()
    comparisons = compare(variants)
    print(format_table(variants, comparisons))
    for line in verdicts(variants):
        print(line)
    warning = caveat(setup.steps * setup.rounds, threads, load)
    if warning:
        print(warning, file=sys.stderr)

    now = datetime.datetime.now(datetime.timezone.utc)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = "bench_main_job" if setup.timing == "main-job" else "bench_train"
    path = out_dir / f"{kind}_{setup.device.type}_{now.strftime('%Y%m%dT%H%M%SZ')}.csv"
    settings = {
        "timing": setup.timing, "resolution": setup.resolution, "batch": setup.batch,
        "width": setup.width, "steps": setup.steps, "warmup": setup.warmup,
        "rounds": setup.rounds, "memory_format": setup.memory_format,
    }  # fmt: skip
    write_csv(
        path, variants, comparisons, {**settings, **machine_fields(setup.device, threads, now)}
    )
    log(f"wrote {path}")
    if args.profile:
        profile_path = path.with_suffix(".profile.txt")
        write_profile(profile_path, variants, setup, log)
        log(f"wrote {profile_path}")
    return 0
