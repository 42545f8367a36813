"""The `fastgen` command line.

    fastgen train dcgan|vae --data digits|photos|PATH --steps N --batch-size B --out DIR ...
    fastgen sample CKPT --n 64 --out grid.png [--seed S] [--class C] [--interpolate STEPS]
    fastgen verify IMAGE... [--checkpoint CKPT] [--json]   (fastgen.provenance.cli)
    fastgen export CKPT --out G.pt [--format torchscript|pt2|state_dict] [--dtype ...]
    fastgen eval CKPT ...          (fastgen.metrics.cli)
    fastgen bench train ...        (fastgen.bench)
    fastgen bench quality ...      (fastgen.bench_quality)
    fastgen info

Errors in arguments, data, run folders or checkpoints print one line on stderr and exit with
status 2; a run that stopped itself and a file that could not be written (full disk,
read-only file system) print one line and exit with status 1; FASTGEN_DEBUG=1 re-raises them
with the traceback. A bad value (fastgen.utils.errors.ArgumentError, raised by the configs,
models, metrics and device checks) is reported under the command's option that sets it
(`--batch-size`, not `GANConfig: batch_size`): the option's dest is the config field or the
parameter's name. A training run stopped by SIGINT or SIGTERM checkpoints, prints the command
that resumes it and exits with 130 or 143 (fastgen.train.signals). Notes about run files
(fastgen's RunFileWarning) are one line each too.
The library is imported inside each handler (fastgen/__init__.py defers it for the
command), so `fastgen --help`, `fastgen train --help` and `--version` never import torch.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
import warnings

EXIT_USAGE = 2
# OSErrors that are the machine's state, not a bug: one line and exit 1 wherever they happen
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}


class UsageError(ValueError):
    """A command-line argument that is wrong in a way argparse cannot see."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `fastgen train: error: ... (see fastgen train --help)`."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- train ----------------------------------------------------------------------------------


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from fastgen.options import add_options

    p.add_argument("model", choices=["dcgan", "vae"], help="what to train")
    groups = add_options(p)
    run = groups["run"]
    run.add_argument(
        "--resume", default=None, metavar="CKPT",
        help="checkpoint to resume from, or 'latest' in --out (its config is kept)",
    )  # fmt: skip
    run.add_argument(
        "--overwrite", action="store_true",
        help="train into --out even if it holds another run (that run's files are removed)",
    )  # fmt: skip
    run.add_argument(
        "--eval-metrics", default="fid,kid", help="metrics for --eval-every; default: fid,kid"
    )
    run.add_argument(
        "--eval-n", type=int, default=1000, help="generated images per evaluation; default: 1000"
    )
    run.add_argument(
        "--eval-extractor", choices=["digits", "inception"], default="digits",
        help="features for --eval-every: digits (single-channel digit data only) or inception; "
        "default: digits",
    )  # fmt: skip
    run.add_argument(
        "--eval-c2st-input", choices=["features", "pixels"], default="features",
        help="what the c2st metric's classifier sees: the extractor's features or the pixels; "
        "default: features",
    )  # fmt: skip
    run.add_argument("--quiet", action="store_true", help="no progress bar")


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


def run_train(args: argparse.Namespace) -> int:
    from fastgen.options import config_from_options
    from fastgen.train.resume import RunComplete, resume_path, resumed_config

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


# --- sample / export --------------------------------------------------------------------------


def add_which_checkpoint(p: argparse.ArgumentParser) -> None:
    """--checkpoint latest|best: which checkpoint of a run folder CKPT names."""
    p.add_argument(
        "--checkpoint", dest="which", choices=["latest", "best"], default="latest",
        help="with a run folder: its newest checkpoint, or best (checkpoints/best.pt, the "
        "best evaluation's); default: latest",
    )  # fmt: skip


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint, or a run folder (its newest)")
    p.add_argument("--n", type=int, default=64, help="images (or rows with --interpolate)")
    p.add_argument("--out", required=True, help="image file to write (.png, .jpg, .webp)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--class", dest="class_label", type=int, default=None, help="class (conditional models)"
    )
    p.add_argument(
        "--interpolate",
        type=int,
        default=0,
        metavar="STEPS",
        help="latent interpolation: N rows of STEPS images",
    )
    p.add_argument("--nrow", type=int, default=None, help="images per row of the grid")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda[:N]")
    from fastgen.provenance.cli import add_sample_options

    add_sample_options(p)
    add_which_checkpoint(p)


def run_sample(args: argparse.Namespace) -> int:
    from fastgen.provenance.cli import signer_from_options
    from fastgen.sample import sample_to_png
    from fastgen.train.checkpoint import checkpoint_file
    from fastgen.utils.devices import resolve_device

    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    if args.interpolate == 1 or args.interpolate < 0:
        raise UsageError(f"--interpolate needs at least 2 steps, got {args.interpolate}")
    device = str(resolve_device(args.device, "fastgen sample"))
    signer = signer_from_options(args)  # a bad key or certificate stops here, nothing written
    path = sample_to_png(
        checkpoint_file(args.checkpoint, args.which), args.out, n=args.n, seed=args.seed,
        class_label=args.class_label, interpolation_steps=args.interpolate, device=device,
        nrow=args.nrow, separate=args.separate, provenance=args.provenance, signer=signer,
    )  # fmt: skip
    print(f"wrote {path}" + (" and each image alone" if args.separate else ""))
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint, or a run folder (its newest)")
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--format", choices=["torchscript", "pt2", "state_dict"], default="torchscript")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    add_which_checkpoint(p)


def run_export(args: argparse.Namespace) -> int:
    from fastgen.export import export_checkpoint
    from fastgen.train.checkpoint import checkpoint_file

    summary = export_checkpoint(
        checkpoint_file(args.checkpoint, args.which), args.out, format=args.format, dtype=args.dtype
    )
    print(f"wrote {summary['path']} ({summary['format']}, {summary['kind']}, {summary['dtype']}, "
          f"{summary['bytes'] / 1e6:.2f} MB)")  # fmt: skip
    return 0


# --- eval / bench (their code owns their arguments) ---------------------------------------


def _delegate(p: argparse.ArgumentParser, module: str) -> None:
    """Lets `module` add its own arguments (it owns them and its handler, `run`)."""
    __import__(module, fromlist=["add_arguments"]).add_arguments(p)
    p.set_defaults(delegate=module)


def run_delegate(args: argparse.Namespace) -> int:
    mod = __import__(args.delegate, fromlist=["run"])
    code = mod.run(args)
    return 0 if code is None else int(code)


# --- main ----------------------------------------------------------------------------------


def _version() -> str:
    """fastgen's version without importing torch (so --version is instant)."""
    try:
        from importlib.metadata import version

        return version("fastgen")
    except Exception:  # not installed: read it from the package source
        import re

        init = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__init__.py")
        found = re.search(r'__version__ = "([^"]+)"', open(init).read())
        return found.group(1) if found else "unknown"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The `fastgen` parser; its `commands` attribute maps each command (`bench`: `bench
    train`) to the parser that holds its options."""
    parser = Parser(prog="fastgen", description="fused kernels, GANs and VAEs for PyTorch")
    parser.add_argument("--version", action="version", version=f"fastgen {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train a DCGAN or a VAE")
    add_train_arguments(train)
    sample = sub.add_parser("sample", help="sample a grid PNG from a checkpoint")
    add_sample_arguments(sample)
    export = sub.add_parser("export", help="export an inference-only generator")
    add_export_arguments(export)
    info = sub.add_parser("info", help="versions, build, CPU features and native backends")
    info.add_argument("--json", action="store_true", help="print it as JSON")
    # eval and bench import their modules only when named, so other commands never pay for them
    eval_parser = sub.add_parser("eval", help="FID/KID/IS/precision-recall of a checkpoint")
    verify = sub.add_parser("verify", help="check images' provenance: marks, C2PA, regeneration")
    bench = sub.add_parser("bench", help="end-to-end benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    bench_train = bench_sub.add_parser("train", help="training images/s, fused vs stock")
    bench_quality = bench_sub.add_parser(
        "quality", help="FID/KID/c2st against training time, per variant and seed"
    )
    words = [a for a in argv if not a.startswith("-")]
    command = words[0] if words else None
    quality = command == "bench" and words[1:2] == ["quality"]
    if command == "eval":
        _delegate(eval_parser, "fastgen.metrics.cli")
    elif quality:
        _delegate(bench_quality, "fastgen.bench_quality")
    elif command == "bench":
        _delegate(bench_train, "fastgen.bench")
    elif command == "verify":
        _delegate(verify, "fastgen.provenance.cli")
    parser.commands = {"train": train, "sample": sample, "export": export, "info": info,
                       "eval": eval_parser, "bench": bench_quality if quality else bench_train,
                       "verify": verify}  # fmt: skip
    return parser


def _option_of(parser: argparse.ArgumentParser, dest: str) -> str | None:
    """The option (its long form) that sets `dest` in `parser`; None when no option does."""
    for action in parser._actions:
        if action.dest == dest and action.option_strings:
            return max(action.option_strings, key=len)
    return None


HANDLERS = {"train": run_train, "sample": run_sample, "export": run_export}


def _expected_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(errors in the user's input -> exit 2, a training run that stopped itself -> exit 1)."""
    usage: list[type[BaseException]] = [
        ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError
    ]  # fmt: skip
    from fastgen.utils.atomic import WriteError  # its message names the file; nothing half-written
    from fastgen.utils.extras import MissingExtraError  # says what to pip install

    usage.append(MissingExtraError)
    stopped: list[type[BaseException]] = [WriteError]
    # Raised only by modules that are loaded by then (both import torch): looked up, not imported.
    for module, name, kind in (
        ("fastgen.checkpoint_io", "CheckpointError", usage),
        ("fastgen.train.precision", "TrainingError", stopped),  # e.g. too many non-finite losses
    ):
        if module in sys.modules:
            kind.append(getattr(sys.modules[module], name))
    return tuple(usage), tuple(stopped)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command == "info":
        try:
            from fastgen._info import format_info, info
        except ValueError as err:  # e.g. a bad FASTGEN_BACKEND, refused at import
            print(f"fastgen info: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        print(json.dumps(info(), indent=2) if args.json else format_info())
        return 0
    handler = HANDLERS.get(args.command, run_delegate)
    debug = os.environ.get("FASTGEN_DEBUG", "") not in ("", "0")
    try:
        with warnings.catch_warnings():
            _notes_on_one_line(args.command)
            return handler(args)
    except KeyboardInterrupt as stop:
        return _interrupted(args.command, argv, stop)
    except Exception as err:
        usage, stopped = _expected_errors()
        disk = isinstance(err, OSError) and err.errno in DISK_ERRNOS
        if debug or not (isinstance(err, usage + stopped) or disk):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        flag = _flag_of_error(err, parser.commands[args.command])
        if flag is not None:  # the flag the user typed, not the field or function behind it
            message = f"{flag} {err.problem}"
        if disk and not isinstance(err, stopped) and err.filename is not None:
            message = f"cannot write {err.filename}: {err.strerror}"
        prefix = f"fastgen {args.command}"
        if args.command == "bench":
            prefix += f" {args.bench_command}"
        message = message.removeprefix(f"{prefix}: ")
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, usage) else 1


def _flag_of_error(err: BaseException, command: argparse.ArgumentParser) -> str | None:
    """The command's option behind an ArgumentError: its argument is a config field or a
    parameter named as the option's dest (train's config fields are its options' dests)."""
    from fastgen.utils.errors import ArgumentError

    return _option_of(command, err.argument) if isinstance(err, ArgumentError) else None


def _interrupted(command: str, argv: list[str], stop: KeyboardInterrupt) -> int:
    """Reports a command stopped by a signal; its exit status, 128 + the signal's number.
    A training run (fastgen.train.signals.RunInterrupted) says where its checkpoint is and
    the command that resumes it (rank 0 only, under torchrun)."""
    signals = sys.modules.get("fastgen.train.signals")  # loaded if a run was stopped
    if signals is None or not isinstance(stop, signals.RunInterrupted):
        print(f"fastgen {command}: interrupted", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":
        where = f"; checkpoint: {stop.checkpoint}" if stop.checkpoint else "; no checkpoint"
        if stop.aborted:
            where = (
                f"; every file is whole, the last checkpoint is {stop.checkpoint}"
                if stop.checkpoint
                else "; every file is whole, no checkpoint was written"
            )
        print(f"fastgen {command}: {stop}{where}", file=sys.stderr)
        if stop.checkpoint:
            print(f"fastgen {command}: resume with: {resume_command(argv)}", file=sys.stderr)
    return 128 + stop.signum


def resume_command(argv: list[str]) -> str:
    """The `fastgen train` command line `argv` as the command that resumes its run: the same
    options (a resume may give them again) without --overwrite and --resume, then
    --resume latest. Under torchrun it is run by torchrun as before."""
    kept, skip = [], False
    for arg in argv:
        name = arg.split("=", 1)[0]
        if skip:
            skip = False
        elif _abbreviates(name, "--overwrite"):
            pass
        elif _abbreviates(name, "--resume"):
            skip = "=" not in arg  # its value is the next argument
        else:
            kept.append(arg)
    return shlex.join(["fastgen", *kept, "--resume", "latest"])


def _abbreviates(name: str, flag: str) -> bool:
    """True when `name` is `flag` or an abbreviation argparse took for it (argparse refuses
    ambiguous ones, so a prefix it accepted names this flag alone)."""
    return name.startswith("--") and len(name) > 2 and flag.startswith(name)


def _notes_on_one_line(command: str) -> None:
    """Prints fastgen's RunFileWarnings and OneLineWarnings as `fastgen CMD: warning: ...`
    (not Python's two lines with a source line); inside main's catch_warnings, so it is undone
    on return."""
    from fastgen.checkpoint_io import RunFileWarning
    from fastgen.utils.errors import OneLineWarning

    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (RunFileWarning, OneLineWarning)):
            print(f"fastgen {command}: warning: {message}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


if __name__ == "__main__":
    sys.exit(main())
