"""SIGINT and SIGTERM during `fastgen train` (issue 28, item 2): the run finishes its step,
writes a checkpoint, prints it and the command that resumes, and exits 130 / 143; the resumed
run ends bitwise where an uninterrupted one does; a second signal aborts at once leaving every
file whole; under torchrun every rank stops after the same step. Each test runs a real
training process (a tiny DCGAN, a few hundred steps of a few milliseconds)."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT
from helpers.cli_helpers import TINY, run_cli
from helpers.train_helpers import TinyDataset, gan_config

from fastgen.cli import main
from fastgen.train import load_checkpoint, train_gan
from fastgen.train.checkpoint import list_checkpoints

STEPS = 500  # long enough to act mid-run: ~3 s of steps after a ~5 s start


def train_argv(out, steps=STEPS) -> list[str]:
    flags = [*TINY, "--steps", str(steps), "--log-every", "1", "--checkpoint-every", "100"]
    flags += ["--threads", "1"]  # two threads on a busy 2-core machine are 20x slower
    return ["train", "dcgan", "--data", "digits", *flags, "--sample-every", "0", "--out", str(out)]


def start(argv, env=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "fastgen", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(out, process, rows: int = 3, timeout: float = 120.0) -> None:
    """Returns once the run has logged `rows` steps (it is training)."""
    log = out / "log.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") >= rows:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no {rows} log rows in {timeout} s")


def finish(process, timeout: float = 120.0) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"still running after {timeout} s: {stderr}") from None
    return process.returncode, stdout, stderr


def trained_state(path) -> dict:
    """What training computed (weights, optimizer and scaler state), not the file's run id."""
    state = load_checkpoint(path)
    return {key: state[key] for key in ("step", "models", "optimizers", "scalers")}


def assert_bitwise_equal(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_bitwise_equal(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{index}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main(train_argv(out)) == 0
    return trained_state(out / "checkpoints" / f"ckpt_{STEPS:06d}.pt")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_checkpoints_the_step_and_the_printed_command_resumes_bitwise(
    tmp_path, capsys, uninterrupted, signum
):
    out = tmp_path / "run"
    process = start(train_argv(out))
    try:
        wait_for_rows(out, process)
        # The run holds its folder: a second run into it is refused, in one line (issue 24.11).
        code, _, err = run_cli(train_argv(out), capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert str(out) in err and "another process" in err, err
        process.send_signal(signum)
    finally:
        code, _, stderr = finish(process)
    # Before: SIGINT printed "interrupted" and exited 130 with the steps since the last
    # checkpoint lost; SIGTERM killed the process (-15) with nothing written.
    assert code == 128 + signum, stderr
    assert "Traceback" not in stderr, stderr
    checkpoint = list_checkpoints(out / "checkpoints")[-1]
    step = load_checkpoint(checkpoint)["step"]
    assert 3 <= step < STEPS, step
    assert str(checkpoint) in stderr, stderr
    resume_lines = [line for line in stderr.splitlines() if "resume with:" in line]
    assert len(resume_lines) == 1, stderr
    command = shlex.split(resume_lines[0].split("resume with:", 1)[1])
    assert command[:2] == ["fastgen", "train"] and command[-2:] == ["--resume", "latest"], command
    code, _, err = run_cli(command[1:], capsys)
    assert code == 0, err
    resumed = trained_state(out / "checkpoints" / f"ckpt_{STEPS:06d}.pt")
    assert_bitwise_equal(resumed, uninterrupted)


def test_a_second_signal_while_checkpointing_aborts_at_once_and_leaves_every_file_whole(
    tmp_path, monkeypatch
):
    from fastgen.train import loop
    from fastgen.train.signals import RunInterrupted

    real_seed_step, real_save = loop.seed_step, torch.save

    def seed_step(seed, step, rank):
        if step == 5:  # the first Ctrl-C, in step 5, after the checkpoint of step 4
            os.kill(os.getpid(), signal.SIGINT)
        return real_seed_step(seed, step, rank)

    def save(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 5:  # the stop's checkpoint
            handle.write(b"partial")
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, in the middle of it
            time.sleep(1)  # the handler runs before this returns
        return real_save(obj, handle, *args, **kwargs)

    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(loop, "seed_step", seed_step)
    monkeypatch.setattr(torch, "save", save)
    config = gan_config(tmp_path, steps=50, checkpoint_every=4)
    started = time.monotonic()
    with pytest.raises(RunInterrupted) as info:
        train_gan(config, TinyDataset(), progress=False)
    assert time.monotonic() - started < 30
    assert info.value.aborted and info.value.signum == signal.SIGINT
    folder = tmp_path / "gan" / "checkpoints"
    assert sorted(os.listdir(folder)) == ["ckpt_000004.pt"]  # no temporary, no torn file
    assert load_checkpoint(folder / "ckpt_000004.pt")["step"] == 4
    assert signal.getsignal(signal.SIGINT) is handler  # the run's handlers are gone


def test_an_ignored_signal_stays_ignored():
    """A run started with SIGINT ignored (`nohup`, `fastgen train ... &` in a script) is not
    stopped by it; SIGTERM is still handled, and its handler restored after the run."""
    from fastgen.train.signals import StopSignals

    term = signal.getsignal(signal.SIGTERM)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopSignals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not term
        assert signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGINT, previous)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_under_torchrun_every_rank_stops_after_the_same_step(tmp_path):
    out = tmp_path / "run"
    port = str(free_port())
    ranks = [
        start(
            train_argv(out),
            env={
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "WORLD_SIZE": "2",
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
            },
        )  # fmt: skip
        for rank in range(2)
    ]
    try:
        wait_for_rows(out, ranks[0])
        ranks[1].send_signal(signal.SIGTERM)  # only rank 1 is told: rank 0 learns it in-step
    finally:
        results = [finish(process) for process in ranks]
    # Before: rank 1 died of the signal and rank 0 failed in its next collective.
    assert [code for code, _, _ in results] == [143, 143], results
    stderr = results[0][2]
    checkpoint = list_checkpoints(out / "checkpoints")[-1]
    assert str(checkpoint) in stderr and "resume with:" in stderr, stderr
    assert 3 <= load_checkpoint(checkpoint)["step"] < STEPS
    assert "resume with:" not in results[1][2]  # rank 0 alone reports
