"""Checkpoints: resume equality, atomic writes, keep-last-k, weights_only, bad files."""

from __future__ import annotations

import errno
import os
import pickle
import tempfile

import pytest
import torch
from helpers import ROOT
from helpers.train_helpers import TinyDataset, gan_config, vae_config

from fastgen.train import train_gan, train_vae
from fastgen.train.checkpoint import (
    CheckpointError,
    checkpoint_hash,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_models,
    save_checkpoint,
)


def assert_same_weights(state_a: dict, state_b: dict, what: str) -> None:
    assert list(state_a) == list(state_b), what
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), f"{what}: {key} differs"


@pytest.mark.parametrize("loss", ["bce", "wgan-gp"])
def test_gan_resume_equals_uninterrupted_run(tmp_path, loss):
    data = TinyDataset()
    extra = {"loss": loss, "diffaugment": "color,translation,cutout"}
    if loss == "bce":
        extra.update(r1_gamma=1.0, label_smoothing=0.1)
    full = train_gan(gan_config(tmp_path / "full", steps=6, **extra), data, progress=False)
    # Stopped at 3 ("killed" after its checkpoint), then resumed to 6, in a new folder.
    part = train_gan(gan_config(tmp_path / "part", steps=3, **extra), data, progress=False)
    resumed = train_gan(
        gan_config(tmp_path / "part", steps=6, **extra),
        data,
        resume=part["checkpoint"],
        progress=False,
    )
    assert resumed["step"] == 6 and resumed["steps_run"] == 3
    a, b = load_checkpoint(full["checkpoint"]), load_checkpoint(resumed["checkpoint"])
    for name in ("generator", "discriminator", "ema"):
        assert_same_weights(a["models"][name], b["models"][name], name)
    assert (
        a["optimizers"]["generator"]["state"][0]["step"]
        == b["optimizers"]["generator"]["state"][0]["step"]
    )
    # The resumed run's log continues the first one's: steps 1..6 once each.
    rows = [line for line in open(tmp_path / "part" / "gan" / "log.jsonl") if '"loss_d"' in line]
    assert len(rows) == 6


def test_vae_resume_equals_uninterrupted_run(tmp_path):
    data = TinyDataset()
    full = train_vae(vae_config(tmp_path / "full", steps=6, kl_warmup=4), data, progress=False)
    part = train_vae(vae_config(tmp_path / "part", steps=2, kl_warmup=4), data, progress=False)
    resumed = train_vae(
        vae_config(tmp_path / "part", steps=6, kl_warmup=4),
        data,
        resume=part["checkpoint"],
        progress=False,
    )
    a, b = load_checkpoint(full["checkpoint"]), load_checkpoint(resumed["checkpoint"])
    assert_same_weights(a["models"]["vae"], b["models"]["vae"], "vae")


def test_same_seed_repeats_and_other_seed_differs(tmp_path):
    data = TinyDataset()
    runs = [
        train_gan(gan_config(tmp_path / name, steps=3, seed=seed), data, progress=False)
        for name, seed in (("a", 1), ("b", 1), ("c", 2))
    ]
    states = [load_checkpoint(r["checkpoint"])["models"]["generator"] for r in runs]
    assert_same_weights(states[0], states[1], "same seed")
    assert any(not torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_checkpoint_contents_and_load_models(tmp_path):
    data = TinyDataset()
    result = train_gan(gan_config(tmp_path, steps=2, conditional=True), data, progress=False)
    path = result["checkpoint"]
    state = torch.load(path, weights_only=True)  # only tensors and primitive containers
    assert state["step"] == 2 and state["config"]["kind"] == "dcgan"
    assert set(state["models"]) == {"generator", "discriminator", "ema"}
    assert set(state["optimizers"]) == {"generator", "discriminator"}
    assert isinstance(state["rng"]["torch"], torch.Tensor)
    config, models = load_models(path)
    assert config.conditional and set(models) == {"generator", "discriminator", "ema"}
    assert not models["ema"].training
    images = models["ema"](torch.randn(3, 8), torch.tensor([0, 1, 2]))
    assert images.shape == (3, 1, 16, 16)
    assert len(checkpoint_hash(path)) == 12
    assert latest_checkpoint(tmp_path / "gan") == latest_checkpoint(
        tmp_path / "gan" / "checkpoints"
    )


def test_load_models_vae(tmp_path):
    result = train_vae(
        vae_config(tmp_path, steps=1, likelihood="gaussian"), TinyDataset(), progress=False
    )
    config, models = load_models(result["checkpoint"], fused=False)
    assert config.likelihood == "gaussian" and set(models) == {"vae"}


def test_load_model_reads_the_file_once_and_picks_the_model_to_sample(tmp_path, monkeypatch):
    import builtins
    from pathlib import Path

    from fastgen.models.loading import load_model

    gan = train_gan(gan_config(tmp_path, steps=2, conditional=True), TinyDataset(), progress=False)
    path = Path(gan["checkpoint"])
    reads = []
    real_open, real_read_bytes = builtins.open, Path.read_bytes
    monkeypatch.setattr(
        builtins, "open", lambda f, *a, **k: reads.append(f) or real_open(f, *a, **k)
    )
    monkeypatch.setattr(
        Path, "read_bytes", lambda self: reads.append(self) or real_read_bytes(self)
    )
    loaded = load_model(path.parent.parent)  # a run folder: its newest checkpoint
    assert [Path(f) for f in reads if Path(f).name == path.name] == [path]
    monkeypatch.undo()
    assert loaded.path == path and loaded.kind == "dcgan" and loaded.name == "ema"
    assert loaded.model is loaded.models["ema"] and not loaded.model.training
    assert loaded.step == 2 and loaded.hash == checkpoint_hash(path)
    assert loaded.num_classes == 3 and loaded.config.conditional and loaded.meta["num_classes"] == 3
    assert loaded.model.generate(torch.randn(2, 8), torch.tensor([0, 2])).shape == (2, 1, 16, 16)
    vae = train_vae(vae_config(tmp_path, steps=1), TinyDataset(), progress=False)
    loaded = load_model(vae["checkpoint"], fused=False)
    assert (loaded.kind, loaded.name, loaded.num_classes) == ("vae", "vae", 0)
    assert loaded.model is loaded.models["vae"] and not loaded.model.fused
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_model(tmp_path / "nowhere.pt")


def test_keep_last_k_and_atomic_write(tmp_path):
    data = TinyDataset()
    train_gan(
        gan_config(tmp_path, steps=5, checkpoint_every=1, keep_checkpoints=2), data, progress=False
    )
    folder = tmp_path / "gan" / "checkpoints"
    assert [p.name for p in list_checkpoints(folder)] == ["ckpt_000004.pt", "ckpt_000005.pt"]
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]  # no temporary files left


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt_000001.pt"
    save_checkpoint(path, {"step": 1, "config": {}, "models": {"x": torch.ones(2)}})
    before = path.read_bytes()

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "config": {}, "models": {"x": torch.zeros(2)}})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt_000001.pt"]


def test_truncated_and_corrupt_checkpoints_name_the_file(tmp_path):
    data = TinyDataset()
    train_gan(gan_config(tmp_path, steps=2, checkpoint_every=1), data, progress=False)
    good, newest = list_checkpoints(tmp_path / "gan" / "checkpoints")
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="ckpt_000002.pt"):
        load_checkpoint(newest)
    with pytest.raises(CheckpointError, match="ckpt_000002.pt"):
        train_gan(gan_config(tmp_path, steps=4), data, resume=str(newest), progress=False)
    assert load_checkpoint(good)["step"] == 1  # the previous good one is intact
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_errors_name_the_function_that_raised(tmp_path):
    """Not fastgen.train.checkpoint, an alias that only re-exports these functions."""
    from fastgen.checkpoint_io import checkpoint_step

    with pytest.raises(CheckpointError, match=r"^fastgen\.checkpoint_io\.load_checkpoint: "):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"^fastgen\.checkpoint_io\.checkpoint_step: "):
        checkpoint_step(tmp_path / "best.pt")
    state = {"format": "fastgen-checkpoint", "version": 1, "step": 0, "config": {}, "models": {}}
    with pytest.raises(CheckpointError, match=r"^fastgen\.models\.loading\.load_models: "):
        load_models(tmp_path / "x.pt", state=state)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"format": "fastgen-checkpoint", "payload": Exploit()}, handle)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    torch.save({"step": 1}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a fastgen checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


# --- damage and malformed contents (issue 13, items 2, 4, 5, 7) ----------------------------


def flip_tensor_bytes(path, count: int = 64) -> None:
    """Inverts `count` bytes in the middle of the checkpoint's largest tensor record (torch
    stores them uncompressed in the zip, so the file still loads)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    raw = bytearray(path.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2 - count // 2
    raw[start : start + count] = bytes(b ^ 0xFF for b in raw[start : start + count])
    path.write_bytes(bytes(raw))


def test_flipped_tensor_bytes_are_detected(tmp_path):
    data = TinyDataset()
    result = train_gan(gan_config(tmp_path, steps=2), data, progress=False)
    path = tmp_path / "gan" / "checkpoints" / "ckpt_000002.pt"
    flip_tensor_bytes(path)
    torch.load(path, weights_only=True)  # torch itself notices nothing
    with pytest.raises(CheckpointError, match=r"ckpt_000002\.pt.*checksum"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"ckpt_000002\.pt.*checksum"):
        train_gan(gan_config(tmp_path, steps=4), data, resume=result["checkpoint"], progress=False)


def test_checkpoint_without_checksum_loads_with_a_note(tmp_path):
    path = tmp_path / "ckpt_000001.pt"
    save_checkpoint(path, {"step": 1, "config": {}, "models": {"x": {"w": torch.ones(2)}}})
    state = torch.load(path, weights_only=True)
    assert isinstance(state.pop("sha256"), str)
    torch.save(state, path)  # as fastgen wrote checkpoints before the checksum
    with pytest.warns(UserWarning, match=r"ckpt_000001\.pt.*no checksum"):
        assert load_checkpoint(path)["step"] == 1


def _malformed(state: dict, what: str) -> None:
    if what == "no optimizers":
        del state["optimizers"]
    elif what == "generator not a dict":
        state["models"]["generator"] = 3
    elif what == "generator of another shape":
        key = next(iter(state["models"]["generator"]))
        state["models"]["generator"][key] = torch.zeros(1)
    elif what == "bad rng state":
        state["rng"]["torch"] = torch.zeros(3, dtype=torch.uint8)
    elif what == "optimizer not a dict":
        state["optimizers"]["discriminator"] = "adam"
    elif what == "step not an int":
        state["step"] = "abc"


MALFORMED = {
    "no optimizers": "optimizers",
    "generator not a dict": "generator",
    "generator of another shape": "generator",
    "bad rng state": "rng",
    "optimizer not a dict": "discriminator",
    "step not an int": "step",
}


@pytest.fixture(scope="module")
def gan_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("malformed")
    return train_gan(gan_config(out, steps=2), TinyDataset(), progress=False)["checkpoint"]


@pytest.mark.parametrize("what", sorted(MALFORMED))
def test_malformed_checkpoints_name_the_file_and_the_problem(tmp_path, gan_checkpoint, what):
    state = load_checkpoint(gan_checkpoint)
    _malformed(state, what)
    path = tmp_path / "bad" / "ckpt_000002.pt"
    save_checkpoint(
        path, {k: v for k, v in state.items() if k not in ("format", "version", "sha256")}
    )
    with pytest.raises(CheckpointError) as info:
        train_gan(gan_config(tmp_path, steps=4), TinyDataset(), resume=str(path), progress=False)
    message = str(info.value)
    assert str(path) in message and MALFORMED[what] in message, message
    assert len(message.splitlines()) == 1, message


def test_unsafe_pickle_is_refused_without_torchs_advice(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "fastgen-checkpoint", "payload": Exploit()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "evil.pt" in message and "posix.system" in message, message
    # before: "... Re-running `torch.load` with `weights_only` set to `False` will likely succeed"
    assert "weights_only" not in message and "False" not in message, message


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_write_errors_name_the_file_and_leave_the_old_one(tmp_path, monkeypatch, code):
    from fastgen.train.checkpoint import WriteError

    path = tmp_path / "ckpt_000001.pt"
    save_checkpoint(path, {"step": 1, "config": {}, "models": {"x": {"w": torch.ones(2)}}})
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    # A full disk fails the write; a read-only file system fails creating the file.
    monkeypatch.setattr(torch, "save", fail) if code == errno.ENOSPC else monkeypatch.setattr(
        tempfile, "mkstemp", fail
    )
    with pytest.raises(WriteError) as info:
        save_checkpoint(path, {"step": 2, "config": {}, "models": {"x": {"w": torch.zeros(2)}}})
    assert info.value.errno == code
    assert str(path) in str(info.value) and os.strerror(code) in str(info.value)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt_000001.pt"]


def test_fastgen_imports_the_modules_not_their_public_aliases():
    """fastgen.train.checkpoint and fastgen.train.config only re-export (for users); fastgen's
    own code imports the modules that define the names, and the model side never reaches up
    into training code."""
    import re

    package = ROOT / "fastgen"
    alias = re.compile(
        r"fastgen\.train\.(checkpoint|config) import"  # the aliases' own names
        r"|from fastgen\.train import .*\b(checkpoint|\w*Config|CheckpointError|load_\w+)\b"
    )
    for path in package.rglob("*.py"):
        if path.relative_to(package).as_posix() in ("train/checkpoint.py", "train/config.py"):
            continue
        assert not alias.search(path.read_text()), path
    for path in (package / "models").glob("*.py"):
        assert "fastgen.train" not in path.read_text(), path
