"""Training on little data: --limit's subset, ADA's p (rises when D separates real from fake,
stays in [0, 1), survives a resume) and LeCam's term against a hand computation."""

from __future__ import annotations

import pytest
import torch
from helpers.train_helpers import TinyDataset, gan_config

from fastgen.data import ImageDataset
from fastgen.data.subset import limit_dataset
from fastgen.train import train_gan
from fastgen.train.ada import P_MAX, AdaptiveAugment, LeCam, ada_augment
from fastgen.train.checkpoint import load_checkpoint
from fastgen.utils.errors import ArgumentError


def test_limit_is_a_seeded_class_balanced_subset():
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 2)
    data = ImageDataset(torch.rand(22, 1, 4, 4) * 2 - 1, labels, name="x")
    small = limit_dataset(data, 9, seed=5)
    assert len(small) == 9 and isinstance(small, ImageDataset) and small.num_classes == 3
    counts = torch.bincount(small.labels, minlength=3).tolist()
    assert counts[2] == 2 and sorted(counts[:2]) == [3, 4]  # class 2 short: the rest fills in
    again = limit_dataset(data, 9, seed=5)
    assert torch.equal(again.images, small.images)  # seeded
    assert not torch.equal(limit_dataset(data, 9, seed=6).images, small.images)
    unlabelled = ImageDataset(data.images, None)
    assert torch.equal(limit_dataset(unlabelled, 4, seed=0).images, data.images[:4])
    assert limit_dataset(data, 0, seed=0) is data
    with pytest.raises(ArgumentError, match="limit is 23 but the data has 22 images"):
        limit_dataset(data, 23, seed=0)


def test_ada_augment_is_differentiable_and_off_at_p_zero():
    images = (torch.rand(6, 3, 8, 8) * 2 - 1).requires_grad_(True)
    assert torch.equal(ada_augment(images, 0.0), images)
    out = ada_augment(images, 1.0)
    assert out.shape == images.shape and not torch.equal(out, images)
    out.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()


def test_ada_p_rises_when_d_separates_and_stays_below_one():
    ada = AdaptiveAugment(target=0.6, interval=2, kimg=0.01, batch_size=8, device="cpu")
    ps = []
    for step in range(1, 41):
        ada.observe(torch.full((8,), 3.0))  # D sure of every real image: r_t = 1
        ada.adjust(step)
        ps.append(ada.p)
    assert ps[1] > 0 and ps == sorted(ps) and ps[-1] == P_MAX < 1
    for step in range(41, 81):
        ada.observe(torch.full((8,), -1.0))  # r_t = -1: p falls back to 0
        ada.adjust(step)
    assert ada.p == 0.0


def test_lecam_against_a_hand_computation():
    lecam = LeCam(weight=0.5, decay=0.9, device="cpu")
    real = torch.tensor([1.0, 3.0])
    fake = torch.tensor([-2.0, 0.0])
    first = lecam.penalty(real, fake)  # anchors start at the means: real 2, fake -1
    hand = ((1 - -1) ** 2 + (3 - -1) ** 2) / 2 + ((2 - -2) ** 2 + (2 - 0) ** 2) / 2
    assert first.item() == pytest.approx(0.5 * hand)
    real2, fake2 = torch.tensor([0.0, 0.0]), torch.tensor([4.0, 4.0])
    second = lecam.penalty(real2, fake2)  # anchors: real 0.9*2 = 1.8, fake -0.9 + 0.4 = -0.5
    hand = ((0 + 0.5) ** 2) + 0.0  # relu(0 - -0.5)^2, relu(1.8 - 4) = 0
    assert second.item() == pytest.approx(0.5 * hand)
    assert torch.allclose(lecam.anchors, torch.tensor([1.8, -0.5]))


def test_ada_and_lecam_train_log_checkpoint_and_resume_bit_for_bit(tmp_path):
    data = TinyDataset()
    settings = dict(ada=True, ada_interval=2, ada_kimg=0.05, lecam=0.1, checkpoint_every=3)
    whole = train_gan(gan_config(tmp_path / "whole", steps=6, **settings), data, progress=False)
    part = gan_config(tmp_path / "part", steps=3, **settings)
    train_gan(part, data, progress=False)
    state = load_checkpoint(tmp_path / "part" / "gan" / "checkpoints" / "ckpt_000003.pt")
    assert 0 <= state["ada"]["p"] < 1 and state["lecam"]["anchors"].shape == (2,)
    resumed = train_gan(
        gan_config(tmp_path / "part", steps=6, **settings), data, progress=False,
        resume=str(tmp_path / "part" / "gan" / "checkpoints" / "ckpt_000003.pt"),
    )  # fmt: skip
    a, b = load_checkpoint(whole["checkpoint"]), load_checkpoint(resumed["checkpoint"])
    assert a["ada"]["p"] == b["ada"]["p"] > 0
    assert torch.equal(a["lecam"]["anchors"], b["lecam"]["anchors"])
    for name, weights in a["models"].items():
        for key, value in weights.items():
            assert torch.equal(value, b["models"][name][key]), (name, key)
    rows = (tmp_path / "whole" / "gan" / "log.jsonl").read_text()
    assert '"ada_p"' in rows and '"lecam"' in rows
