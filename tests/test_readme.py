"""The README's user-facing promises: the commands it shows parse, the fastgen names its code
uses exist, and the section a new user reads first comes first (issue 28, item 7)."""

from __future__ import annotations

import importlib
import re
import shlex

import pytest
from helpers import ROOT

import fastgen
from fastgen.cli import build_parser

README = (ROOT / "README.md").read_text()


def _sections() -> list[tuple[str, str]]:
    """(title, body) of each `## ` section, in order."""
    parts = re.split(r"^## (.+)$", README, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def _code(text: str) -> list[str]:
    return re.findall(r"```.*?```", text, re.S) + re.findall(r"`[^`\n]+`", text)


def _resolve(name: str) -> None:
    """Looks `name` up as Python would after `import fastgen` (and `import fastgen.x` where an
    attribute is a module not yet imported): an attribute first, the submodule only if none."""
    obj, path = fastgen, "fastgen"
    for part in name.split(".")[1:]:
        path += f".{part}"
        if not hasattr(obj, part):
            importlib.import_module(path)  # ModuleNotFoundError when it is no module either
        obj = getattr(obj, part)


def test_fastgen_names_in_the_readmes_code_exist():
    names = {
        name
        for code in _code(README)
        for name in re.findall(r"(?<![\w/.-])fastgen(?:\.[A-Za-z_]\w*)+", code)
    }
    assert "fastgen.nn.convert_sync" in names  # the scan sees the README's code
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (AttributeError, ImportError) as err:
            missing.append(f"{name} ({type(err).__name__}: {err})")
    assert not missing, missing


def test_using_fastgen_comes_first_and_its_commands_parse():
    top = README.split("\n## ", 1)[0]
    assert "make run" in top and "make test" in top  # the two commands stay at the top
    title, body = _sections()[0]
    assert title == "Using fastgen"
    commands = [
        line.split("  #")[0].strip()
        for block in re.findall(r"```\n(.*?)```", body, re.S)
        for line in block.splitlines()
        if line.startswith("fastgen ")
    ]
    for command in ("train", "sample", "eval", "export"):
        assert any(c.split()[1] == command for c in commands), command
    assert any("--resume latest" in c for c in commands)
    for argv in commands:
        argv = shlex.split(argv)[1:]
        parser = build_parser(argv)
        try:
            parser.parse_args(argv)
        except SystemExit as exit_:
            pytest.fail(f"README command does not parse: fastgen {' '.join(argv)} ({exit_})")
    for what in ("log.jsonl", "config.json", "run.json", "samples/", "checkpoints/", "losses.png"):
        assert what in body, what  # what a run folder holds
    assert "[N, latent_dim]" in body and "[N, latent_dim, 1, 1]" in body  # the export's input


def test_step_tables_say_their_width_next_to_make_runs():
    from fastgen.config import GANConfig

    # the DCGAN step tables (fastgen bench train's default width) beside make run's width
    note = re.search(r"the DCGAN is width (\d+).*?`make run` trains the DCGAN at width (\d+)",
                     README, re.S)  # fmt: skip
    assert note is not None and "**Whole training steps.**" in README[: note.start()]
    assert note.groups() == ("64", str(GANConfig().width))
