"""`fastgen train dcgan|vae`: its options and what it runs.

    fastgen train dcgan|vae --data digits|photos|PATH --steps N --batch-size B --out DIR ...

The config's options come from fastgen.config's dataclasses (fastgen.options); the command
adds --resume, --overwrite, the --eval-* options and --quiet. A resumed run keeps its
checkpoint's config (fastgen.train.resume). Nothing here imports torch until `run`, so
`fastgen train --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os

from fastgen.utils.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from fastgen.options import add_options

    p.add_argument("model", choices=["dcgan", "vae"], help="what to train")
    groups = add_options(p)
    run_group = groups["run"]
    run_group.add_argument(
        "--resume", default=None, metavar="CKPT",
        help="checkpoint to resume from, or 'latest' in --out (its config is kept)",
    )  # fmt: skip
    run_group.add_argument(
        "--overwrite", action="store_true",
        help="train into --out even if it holds another run (that run's files are removed)",
    )  # fmt: skip
    run_group.add_argument(
        "--eval-metrics", default="fid,kid", help="metrics for --eval-every; default: fid,kid"
    )
    run_group.add_argument(
        "--eval-n", type=int, default=1000, help="generated images per evaluation; default: 1000"
    )
    run_group.add_argument(
        "--eval-extractor", choices=["digits", "inception"], default="digits",
        help="features for --eval-every: digits (single-channel digit data only) or inception; "
        "default: digits",
    )  # fmt: skip
    run_group.add_argument(
        "--eval-c2st-input", choices=["features", "pixels"], default="features",
        help="what the c2st metric's classifier sees: the extractor's features or the pixels; "
        "default: features",
    )  # fmt: skip
    run_group.add_argument("--quiet", action="store_true", help="no progress bar")


NOT_CONFIG = {
    "command", "model", "resume", "overwrite", "quiet", "eval_metrics", "eval_n",
    "eval_extractor", "eval_c2st_input",
}  # fmt: skip


def given_options(args: argparse.Namespace) -> dict:
    """The config fields the command line gave (field -> value; amp "none" is "")."""
    return {
        name: "" if name == "amp" and value == "none" else value
        for name, value in vars(args).items()
        if name not in NOT_CONFIG
    }


def run(args: argparse.Namespace) -> int:
    from fastgen.options import config_from_options
    from fastgen.train.resume import RunComplete, resume_path, resumed_config
    from fastgen.utils.heap import keep_freed_memory

    keep_freed_memory()  # this process is the run's: reuse freed memory (fastgen/utils/heap.py)

    config = config_from_options(args.model, given_options(args))
    if args.overwrite and args.resume is not None:
        raise UsageError("--overwrite and --resume contradict each other: give one")
    resume = resume_path(args.resume, config.out_dir)
    if resume is not None:
        try:
            config = resumed_config(args.model, given_options(args), resume)
        except RunComplete as done:  # rerunning a finished job's command is not an error
            if os.environ.get("RANK", "0") == "0":
                print(f"fastgen train {args.model}: {done}")
            return 0
    from fastgen.utils.extras import require

    # Before the data is loaded and long before the loss plot is drawn at the end of training.
    needed = ("tqdm",) if not args.quiet else ()
    needed += ("matplotlib", "PIL")
    if config.data in ("digits", "photos"):
        needed += ("sklearn",)
    require(*needed)
    from fastgen.data import load_dataset
    from fastgen.train import train_gan, train_vae

    dataset = load_dataset(
        config.data, resolution=config.resolution, channels=config.channels, split="train"
    )
    if getattr(config, "conditional", False) and dataset.num_classes == 0:
        raise UsageError(f"--conditional needs a labelled dataset; {config.data!r} has no labels")
    evaluator = None
    if config.eval_every:
        evaluator = make_evaluator(args, config, dataset)  # checks --eval-metrics first
        check_best_metric(args, config)
    train = train_gan if args.model == "dcgan" else train_vae
    result = train(
        config, dataset, resume=resume, evaluator=evaluator, progress=not args.quiet,
        overwrite=args.overwrite,
    )  # fmt: skip
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun only rank 0 reports (as only it logs and checkpoints)
    result = result if isinstance(result, dict) else {}
    speed = result.get("images_per_s")
    best = result.get("best")
    print(
        f"fastgen train {args.model}: step {result.get('step', config.steps)}"
        + (f", {speed:.1f} images/s" if isinstance(speed, float) else "")
        + (f"; best {best['metric']} {best['value']:.4g} at step {best['step']}" if best else "")
        + f"; outputs in {config.out_dir}"
    )
    for key in ("checkpoint", "samples"):
        if result.get(key):
            print(f"  {key}: {result[key]}")
    if best:
        print(f"  best: {best['checkpoint']}")
    print(json.dumps(result, default=str))
    return 0


def check_best_metric(args, config) -> None:
    """--best-metric must be a result of --eval-metrics (precision and recall come from pr,
    nll_iw and bits_per_dim_iw from nll)."""
    family = {"precision": "pr", "recall": "pr", "nll_iw": "nll", "bits_per_dim_iw": "nll"}
    wanted = family.get(config.best_metric, config.best_metric)
    evaluated = [m.strip().lower() for m in args.eval_metrics.split(",")]
    if wanted not in evaluated:
        default = " (the default)" if "best_metric" not in vars(args) else ""
        raise UsageError(
            f"--best-metric {config.best_metric}{default} is not among --eval-metrics "
            f"{args.eval_metrics}: add {wanted} to --eval-metrics, or give --best-metric one "
            f"of its results"
        )


# make_evaluator's arguments that `fastgen train` takes as --eval-* options (their dests)
EVAL_OPTIONS = {"metrics": "eval_metrics", "n": "eval_n", "extractor": "eval_extractor",
                "c2st_input": "eval_c2st_input"}  # fmt: skip


def make_evaluator(args, config, dataset):
    """The training-time evaluator from fastgen.metrics (owned by the metrics code)."""
    from fastgen.metrics.cli import make_evaluator as factory
    from fastgen.utils.errors import ArgumentError

    try:
        return factory(
            dataset=dataset,
            metrics=args.eval_metrics,
            n=args.eval_n,
            config=config,
            extractor=args.eval_extractor,
            c2st_input=args.eval_c2st_input,
            cache_dir=config.out_dir,  # real_features.pt, a file of the run
        )
    except ArgumentError as err:
        if err.argument not in EVAL_OPTIONS:
            raise
        raise err.renamed(EVAL_OPTIONS[err.argument]) from None
