"""The `fastgen` command line: it assembles the commands, each defined beside its code.

    fastgen train dcgan|vae ...    (fastgen.train.cli)
    fastgen sample CKPT ...        (fastgen.sample)
    fastgen export CKPT ...        (fastgen.export)
    fastgen eval CKPT ...          (fastgen.metrics.cli)
    fastgen verify IMAGE...        (fastgen.provenance.cli)
    fastgen bench train ...        (fastgen.bench)
    fastgen bench quality ...      (fastgen.bench_quality)
    fastgen info [--json]          (fastgen._info)

Each module defines `add_arguments(parser)` (its options) and `run(args)` (the handler, its
exit status); only the command that is run imports its module.

Errors in arguments, data, run folders or checkpoints print one line on stderr and exit with
status 2; a run that stopped itself and a file that could not be written (full disk,
read-only file system) print one line and exit with status 1; FASTGEN_DEBUG=1 re-raises them
with the traceback. A bad value (fastgen.utils.errors.ArgumentError, raised by the configs,
models, metrics and device checks) is reported under the command's option that sets it
(`--batch-size`, not `GANConfig: batch_size`): the option's dest is the config field or the
parameter's name. A training run stopped by SIGINT or SIGTERM checkpoints, prints the command
that resumes it and exits with 130 or 143 (fastgen.train.signals). Notes about run files
(fastgen's RunFileWarning) are one line each too.
The library is imported inside each handler (fastgen/__init__.py and fastgen/train/__init__.py
defer it for the command), so `fastgen --help`, `fastgen train --help` and `--version` never
import torch.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
import warnings

from fastgen.utils.errors import UsageError  # noqa: F401 - importable from here as before

EXIT_USAGE = 2
# OSErrors that are the machine's state, not a bug: one line and exit 1 wherever they happen
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `fastgen train: error: ... (see fastgen train --help)`."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- the commands (each module owns its options, `add_arguments`, and its handler, `run`) ---

# command -> (its module, its one-line help); `bench` has commands of its own, BENCH
COMMANDS = {
    "train": ("fastgen.train.cli", "train a DCGAN or a VAE"),
    "sample": ("fastgen.sample", "sample a grid PNG from a checkpoint"),
    "export": ("fastgen.export", "export an inference-only generator"),
    "info": ("fastgen._info", "versions, build, CPU features and native backends"),
    "eval": ("fastgen.metrics.cli", "FID/KID/IS/precision-recall of a checkpoint"),
    "verify": ("fastgen.provenance.cli", "check images' provenance: marks, C2PA, regeneration"),
    "bench": (None, "end-to-end benchmarks"),
}
BENCH = {
    "train": ("fastgen.bench", "training images/s, fused vs stock"),
    "quality": (
        "fastgen.bench_quality",
        "FID/KID/c2st against training time, per variant and seed",
    ),
}


def _delegate(p: argparse.ArgumentParser, module: str) -> None:
    """Lets `module` add its own arguments (it owns them and its handler, `run`)."""
    __import__(module, fromlist=["add_arguments"]).add_arguments(p)
    p.set_defaults(delegate=module)


def run_delegate(args: argparse.Namespace) -> int:
    module = vars(args).pop("delegate")  # the handler sees only its own options
    code = __import__(module, fromlist=["run"]).run(args)
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
    train` or `bench quality`) to the parser that holds its options. Only the command that
    argv names imports its module, so a command never pays for another's imports."""
    parser = Parser(prog="fastgen", description="fused kernels, GANs and VAEs for PyTorch")
    parser.add_argument("--version", action="version", version=f"fastgen {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    words = [a for a in argv if not a.startswith("-")]
    parser.commands = {}
    for command, (_, text) in COMMANDS.items():
        parser.commands[command] = sub.add_parser(command, help=text)
    bench_sub = parser.commands["bench"].add_subparsers(
        dest="bench_command", required=True, metavar="WHAT"
    )
    bench = {what: bench_sub.add_parser(what, help=text) for what, (_, text) in BENCH.items()}
    command = words[0] if words else None
    if command == "bench":
        what = "quality" if words[1:2] == ["quality"] else "train"
        _delegate(bench[what], BENCH[what][0])
        parser.commands["bench"] = bench[what]
    elif command in COMMANDS:
        _delegate(parser.commands[command], COMMANDS[command][0])
    return parser


def _option_of(parser: argparse.ArgumentParser, dest: str) -> str | None:
    """The option (its long form) that sets `dest` in `parser`; None when no option does."""
    for action in parser._actions:
        if action.dest == dest and action.option_strings:
            return max(action.option_strings, key=len)
    return None


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
    debug = os.environ.get("FASTGEN_DEBUG", "") not in ("", "0")
    try:
        parser = build_parser(argv)
    except ValueError as err:  # e.g. a bad FASTGEN_BACKEND, refused when the library loads
        if debug:
            raise
        words = [a for a in argv if not a.startswith("-")]
        print(f"fastgen {words[0]}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            _notes_on_one_line(args.command)
            return run_delegate(args)
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
