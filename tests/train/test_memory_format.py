"""--memory-format: the layout the trainers run their models in (fastgen/train/precision.py).
auto is channels_last on CPU under bf16 autocast, NCHW otherwise; either can be forced; the
checkpoints hold the same weights whatever the layout, so a run resumes in another one."""

from __future__ import annotations

import pytest
import torch
from helpers.train_helpers import TinyDataset, gan_config, vae_config

from fastgen.train import train_gan, train_vae
from fastgen.train.checkpoint import load_checkpoint
from fastgen.train.gan import GANTask
from fastgen.train.resume import resumed_config
from fastgen.train.vae import VAETask

CPU = torch.device("cpu")


def layouts(model: torch.nn.Module) -> set[str]:
    """The layouts of a model's 4-d weights with more than one input channel and a kernel
    larger than 1x1 (the others are contiguous both ways)."""
    found = set()
    for p in model.parameters():
        if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:
            cl = p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
            found.add("channels_last" if cl else "nchw")
    return found


@pytest.mark.parametrize(
    "amp, memory_format, expected",
    [("bf16", "auto", "channels_last"), ("", "auto", "nchw"),
     ("bf16", "nchw", "nchw"), ("", "channels_last", "channels_last")],
)  # fmt: skip
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "stock"])
def test_models_run_in_the_chosen_layout(
    tmp_path, monkeypatch, amp, memory_format, expected, fused
):
    # as on a CPU with bf16 instructions (auto's condition; the next test has the others)
    monkeypatch.setattr("fastgen.train.precision.cpu_has_bf16", lambda: True)
    config = gan_config(tmp_path, amp=amp, memory_format=memory_format, fused=fused)
    task = GANTask(config, CPU)
    for name, model in task.models.items():
        assert layouts(model) == {expected}, name
    vae = VAETask(vae_config(tmp_path, amp=amp, memory_format=memory_format, fused=fused), CPU)
    assert layouts(vae.vae) == {expected}
    # activations follow the weights (stock's rule, which the fused layers keep)
    z = torch.randn(4, config.latent_dim)
    with torch.autocast("cpu", torch.bfloat16, enabled=amp == "bf16"):
        images = task.generator(z)
        hidden = task.generator.blocks[:-1](z[:, :, None, None])
    assert images.shape == (4, 1, 16, 16)
    cl = hidden.is_contiguous(memory_format=torch.channels_last) and not hidden.is_contiguous()
    assert ("channels_last" if cl else "nchw") == expected


def test_auto_keeps_nchw_without_bf16_instructions(tmp_path, monkeypatch):
    # bf16 is emulated there and fastgen's kernels are faster in NCHW: auto stays NCHW,
    # as it does with the AVX2 copy forced on any CPU
    monkeypatch.setenv("FASTGEN_CPU_CAPABILITY", "avx2")
    task = GANTask(gan_config(tmp_path, amp="bf16"), CPU)
    assert layouts(task.generator) == layouts(task.discriminator) == {"nchw"}
    forced = GANTask(gan_config(tmp_path, amp="bf16", memory_format="channels_last"), CPU)
    assert layouts(forced.generator) == {"channels_last"}


def test_a_checkpoint_resumes_in_another_layout(tmp_path):
    # A run in channels_last stopped at 3 steps resumes in NCHW with the same weights, and its
    # steps go on to the same weights as a run that stays in NCHW from there.
    data = TinyDataset()
    part = train_gan(gan_config(tmp_path / "a", steps=3, memory_format="channels_last"), data,
                     progress=False)  # fmt: skip
    saved = load_checkpoint(part["checkpoint"])["models"]["generator"]
    resumed = train_gan(gan_config(tmp_path / "a", steps=5, memory_format="nchw"), data,
                        resume=part["checkpoint"], progress=False)  # fmt: skip
    assert resumed["step"] == 5
    weights = load_checkpoint(resumed["checkpoint"])["models"]["generator"]
    assert list(weights) == list(saved)
    assert all(torch.isfinite(w.float()).all() for w in weights.values())
    assert any(not torch.equal(weights[k], saved[k]) for k in saved)
    # the command's check lets the layout change on resume, like threads or compilation
    given = {"steps": 5, "memory_format": "nchw"}
    assert resumed_config("dcgan", given, part["checkpoint"]).memory_format == "nchw"
    with pytest.raises(ValueError, match="--width"):
        resumed_config("dcgan", {**given, "width": 16}, part["checkpoint"])
    vae = train_vae(vae_config(tmp_path / "v", steps=2, amp="bf16"), data, progress=False)
    assert vae["step"] == 2


def test_bad_memory_format_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="memory_format must be one of 'auto', 'nchw'"):
        gan_config(tmp_path, memory_format="nhwc").validate()
