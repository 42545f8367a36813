"""A run folder holds one run: fresh runs refuse a used folder, resumes stay in their run,
pruning never deletes what it just wrote, stale temporary files go, a torn log line is
skipped (issue 13, items 1, 3 and 6); refusals write nothing, a run with no checkpoint does
not block its folder (issue 28, item 1) and a folder in use is locked (issue 24, item 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
from helpers.train_helpers import TinyDataset, gan_config, vae_config

from fastgen import _extension
from fastgen.train import load_checkpoint, train_gan, train_vae
from fastgen.train.checkpoint import list_checkpoints
from fastgen.train.run_log import read_log


def folder_bytes(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_fresh_run_into_a_used_folder_refuses_and_leaves_it_as_it_was(tmp_path):
    data = TinyDataset()
    first = gan_config(tmp_path, steps=9, checkpoint_every=3)
    train_gan(first, data, progress=False)
    out = tmp_path / "gan"
    before = folder_bytes(out)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == [
        "ckpt_000003.pt",
        "ckpt_000006.pt",
        "ckpt_000009.pt",
    ]
    # Before: the new run's ckpt_000002.pt was pruned as the oldest, and the run then failed
    # on reading it back; the old run's log was deleted.
    with pytest.raises(ValueError, match="already holds a run") as info:
        train_gan(gan_config(tmp_path, steps=2, checkpoint_every=1), data, progress=False)
    assert str(out) in str(info.value) and "resume" in str(info.value)
    assert folder_bytes(out) == before  # nothing written, nothing deleted
    # Resuming is what continues it: the old run's newest checkpoint, in its own folder.
    again = train_gan(
        gan_config(tmp_path, steps=10, checkpoint_every=3),
        data,
        resume=str(out / "checkpoints" / "ckpt_000009.pt"),
        progress=False,
    )
    assert again["step"] == 10 and again["steps_run"] == 1


def test_resume_stays_in_its_own_run(tmp_path):
    data = TinyDataset()
    a = train_gan(gan_config(tmp_path, steps=2, out_dir=str(tmp_path / "a")), data, progress=False)
    train_gan(gan_config(tmp_path, steps=3, out_dir=str(tmp_path / "b")), data, progress=False)
    b_before = folder_bytes(tmp_path / "b")
    with pytest.raises(ValueError, match="another run"):
        train_gan(
            gan_config(tmp_path, steps=4, out_dir=str(tmp_path / "b")),
            data,
            resume=a["checkpoint"],
            progress=False,
        )
    assert folder_bytes(tmp_path / "b") == b_before
    # Into a folder that holds no run, a resume continues the checkpoint's run there.
    c = train_gan(
        gan_config(tmp_path, steps=4, out_dir=str(tmp_path / "c")),
        data,
        resume=a["checkpoint"],
        progress=False,
    )
    run_a = json.loads((tmp_path / "a" / "run.json").read_text())["run_id"]
    assert json.loads((tmp_path / "c" / "run.json").read_text())["run_id"] == run_a
    assert load_checkpoint(c["checkpoint"])["run_id"] == run_a


def test_resume_from_an_earlier_checkpoint_keeps_what_it_writes(tmp_path):
    data = TinyDataset()
    train_gan(
        gan_config(tmp_path, steps=6, checkpoint_every=2, keep_checkpoints=3), data, progress=False
    )
    folder = tmp_path / "gan" / "checkpoints"
    # Before: pruning kept the highest steps (4 and 6), deleting the ckpt_000003.pt it had
    # just written.
    with pytest.warns(UserWarning, match=r"later checkpoints of the run \(ckpt_000004\.pt"):
        result = train_gan(
            gan_config(tmp_path, steps=3, checkpoint_every=2, keep_checkpoints=2),
            data,
            resume=str(folder / "ckpt_000002.pt"),
            progress=False,
        )
    assert result["checkpoint"].endswith("ckpt_000003.pt")
    assert load_checkpoint(result["checkpoint"])["step"] == 3
    names = [p.name for p in list_checkpoints(folder)]
    assert "ckpt_000003.pt" in names and "ckpt_000002.pt" in names


def test_stale_temporary_files_of_the_run_are_removed_at_start(tmp_path):
    data = TinyDataset()
    first = train_vae(vae_config(tmp_path, steps=2), data, progress=False)
    out = tmp_path / "vae"
    stale = [  # what killed writes leave (the writer's names: .<file>.<random>.tmp)
        out / "checkpoints" / ".ckpt_000004.pt.k2j3h4g5.tmp",
        out / "samples" / ".step_000004.png.a1b2c3d4.tmp",
        out / ".log.jsonl.q9w8e7r6.tmp",
        out / ".losses.png.tmp",
    ]
    keep = [out / "checkpoints" / "notes.tmp", out / ".hidden.tmp"]  # not the writer's
    for path in stale + keep:
        path.write_bytes(b"partial")
    train_vae(vae_config(tmp_path, steps=3), data, resume=first["checkpoint"], progress=False)
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in keep)


def test_torn_last_log_line_is_skipped_with_a_note_and_repaired_on_resume(tmp_path):
    data = TinyDataset()
    first = train_gan(gan_config(tmp_path, steps=2), data, progress=False)
    log = tmp_path / "gan" / "log.jsonl"
    with open(log, "a") as handle:
        handle.write('{"step": 3, "loss_d": 0.6')  # killed in the middle of a row
    with pytest.warns(UserWarning, match=r"log\.jsonl.*line 3"):
        rows = read_log(log)
    assert [r["step"] for r in rows] == [1, 2]
    # Before: resume stopped with a JSONDecodeError that named no file.
    with pytest.warns(UserWarning, match=r"log\.jsonl"):
        result = train_gan(
            gan_config(tmp_path, steps=4), data, resume=first["checkpoint"], progress=False
        )
    assert result["step"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: reads without a note now
        assert [r["step"] for r in read_log(log) if "loss_d" in r] == [1, 2, 3, 4]


# --- issue 28, items 1 and 6; issue 24, item 11 ----------------------------------------------


def run_files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {"run.lock"}


def test_a_folder_whose_run_has_no_checkpoint_is_free_for_a_fresh_run(tmp_path, capsys):
    """Before: a run stopped before its first checkpoint left a folder that the same command
    refused ("already holds a run") and --resume latest could not continue ("no
    checkpoint")."""
    from fastgen.cli import main

    data = TinyDataset()
    train_gan(gan_config(tmp_path, steps=3, sample_every=1), data, progress=False)
    out = tmp_path / "gan"
    for path in (out / "checkpoints").iterdir():  # as a Ctrl-C before the first checkpoint
        path.unlink()
    (out / "notes.txt").write_text("mine")
    old_id = json.loads((out / "run.json").read_text())["run_id"]
    argv = ["train", "dcgan", "--data", "digits", "--out", str(out), "--resume", "latest"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "without --resume" in err, err
    with pytest.warns(UserWarning, match=r"no checkpoint.*replaced"):
        result = train_gan(gan_config(tmp_path, steps=2), data, progress=False)
    assert result["step"] == 2
    assert json.loads((out / "run.json").read_text())["run_id"] != old_id
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [1, 2]
    assert run_files(out) == {
        "run.json", "config.json", "log.jsonl", "losses.png", "notes.txt",
        "checkpoints/ckpt_000002.pt", "samples/step_000002.png",
    }  # fmt: skip


@pytest.mark.skipif(not _extension.LOADED, reason="the fastgen extension is not built")
def test_a_refused_cpu_capability_writes_nothing(tmp_path, monkeypatch, capsys):
    """Before: FASTGEN_CPU_CAPABILITY=sse4 was refused at the first step, after run.json,
    config.json and the folders were written."""
    from fastgen.cli import main

    monkeypatch.setenv("FASTGEN_CPU_CAPABILITY", "sse4")
    out = tmp_path / "run"
    argv = ["train", "dcgan", "--data", "digits", "--steps", "2", "--resolution", "16",
            "--width", "4", "--device", "cpu", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "FASTGEN_CPU_CAPABILITY" in err, err
    assert not out.exists()


def test_a_folder_another_process_trains_in_is_refused_in_one_line(tmp_path):
    """Two runs started into one folder: the second refuses while the first holds the folder's
    lock (before: both claimed the folder and wrote into each other's run)."""
    out = tmp_path / "gan"
    out.mkdir()
    hold = "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
    hold += "print('held', flush=True); sys.stdin.read()"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(out / "run.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match="another process") as info:
            train_gan(gan_config(tmp_path, steps=2), TinyDataset(), progress=False)
        assert str(out) in str(info.value) and "\n" not in str(info.value)
        assert sorted(os.listdir(out)) == ["run.lock"]  # nothing written
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert train_gan(gan_config(tmp_path, steps=2), TinyDataset(), progress=False)["step"] == 2
