"""Training a GAN on little data: adaptive discriminator augmentation and LeCam regularisation.

ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"). Every
image D sees, real or generated, in the D step and the G step alike, goes through a pipeline
of differentiable augmentations, each applied to an image with probability p:

    x-flip                 mirror left-right
    integer translation    shift by up to 1/8 of the size in x and y, reflecting at the edges
    brightness             add N(0, 0.2^2)
    contrast               scale about the image mean by lognormal(0, (0.5 ln 2)^2)
    saturation (3 ch.)     scale about the pixel's grey by lognormal(0, (ln 2)^2)

With p below about 0.8 the augmentations do not "leak" into the generated images: G cannot
lower its loss by producing augmented-looking images, since un-augmented ones remain the most
likely. p is tuned as training goes: r_t = E[sign(D(real))], averaged over the last
``interval`` steps, measures how far D overfits the real set (1: it is sure of every real
image); every ``interval`` steps

    p <- clamp(p + sign(r_t - target) * batch * interval / (kimg * 1000), 0, P_MAX)

so p can move from 0 to 1 within ``kimg`` thousand images. Under DDP r_t is averaged over
all ranks, so every rank holds the same p. p and the running sums are checkpointed.

LeCam (Tseng et al. 2021, "Regularizing Generative Adversarial Networks under Limited Data").
Two anchors follow D's mean output on real and on generated images as exponential moving
averages (decay 0.99); D's loss gets

    weight * (mean(relu(D(real) - anchor_fake)^2) + mean(relu(anchor_real - D(fake))^2)),

the form of the authors' code (the paper writes the squares without the relu): D's outputs
are kept from drifting far past the other set's running mean, which bounds how confidently a
small real set can be memorised. The anchors start at the first step's means and are
checkpointed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

P_MAX = 0.99  # p stays in [0, 1): at 1 no image D sees would be the real thing


def _chosen(images: torch.Tensor, p: float) -> torch.Tensor:
    """[N, 1, 1, 1]: 1.0 for the images an augmentation applies to (probability p each)."""
    draw = torch.rand(images.shape[0], 1, 1, 1, device=images.device)
    return (draw < p).to(images.dtype)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Positions outside [0, size) mirrored back in (for shifts smaller than the size)."""
    index = torch.where(index < 0, -index, index)
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def xflip(images: torch.Tensor, p: float) -> torch.Tensor:
    chosen = _chosen(images, p)
    return images * (1 - chosen) + images.flip(-1) * chosen


def integer_translation(images: torch.Tensor, p: float, ratio: float = 0.125) -> torch.Tensor:
    n, c, h, w = images.shape
    chosen = _chosen(images, p).view(n, 1, 1).to(torch.int64)
    max_y, max_x = max(1, round(h * ratio)), max(1, round(w * ratio))
    shift_y = torch.randint(-max_y, max_y + 1, (n, 1, 1), device=images.device) * chosen
    shift_x = torch.randint(-max_x, max_x + 1, (n, 1, 1), device=images.device) * chosen
    rows = _reflect(torch.arange(h, device=images.device)[None, :, None] - shift_y, h)
    cols = _reflect(torch.arange(w, device=images.device)[None, None, :] - shift_x, w)
    index = (rows * w + cols).flatten(1)  # [N, H*W]: the source pixel of each output pixel
    flat = images.flatten(2)
    return flat.gather(2, index.unsqueeze(1).expand(-1, c, -1)).view_as(images)


def colour(images: torch.Tensor, p: float) -> torch.Tensor:
    n = images.shape[0]

    def normal(std: float) -> torch.Tensor:
        return torch.randn(n, 1, 1, 1, device=images.device, dtype=images.dtype) * std

    brightness = normal(0.2) * _chosen(images, p)
    images = images + brightness
    contrast = torch.exp2(normal(0.5) * _chosen(images, p))
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast + mean
    saturation = torch.exp2(normal(1.0) * _chosen(images, p))
    if images.shape[1] == 3:
        grey = images.mean(dim=1, keepdim=True)
        images = (images - grey) * saturation + grey
    return images


def ada_augment(images: torch.Tensor, p: float) -> torch.Tensor:
    """The ADA pipeline of the module docstring, each augmentation applied to an image with
    probability p; differentiable in `images`.

    Args:
        images: [N, C, H, W] in [-1, 1] (C = 1 or 3), any float dtype.
        p: probability of each augmentation, in [0, 1].
    Returns:
        Augmented images shaped like `images` (values may leave [-1, 1], as the paper's do);
        `images` itself when p is 0 (ADA's start: no work, no random draws).
    """
    if p <= 0:
        return images
    return colour(integer_translation(xflip(images, p), p), p)


class AdaptiveAugment:
    """ADA's augmentation probability p and its controller (see the module docstring)."""

    def __init__(
        self, *, target: float, interval: int, kimg: float, batch_size: int, device
    ) -> None:
        self.target, self.interval, self.kimg = target, interval, kimg
        self.batch_size = batch_size
        self.p = 0.0
        self.rt = 0.0  # the latest r_t (logged)
        # sums over the current interval, on the device (read once per interval)
        self.sign_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.processes = None  # fastgen.train.distributed.Distributed, set by the task

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        return ada_augment(images, self.p)

    @torch.no_grad()
    def observe(self, real_logits: torch.Tensor) -> None:
        """Adds a D step's logits on (augmented) real images to r_t's sums."""
        self.sign_sum += torch.sign(real_logits.detach().float()).sum().double()
        self.count += real_logits.numel()

    def adjust(self, step: int) -> None:
        """Every `interval` steps: r_t from the sums, p moved towards the target, sums reset."""
        if step % self.interval:
            return
        sums = torch.stack([self.sign_sum, self.count])
        if self.processes is not None and self.processes.enabled:
            import torch.distributed as dist

            dist.all_reduce(sums)
        sign_sum, count = (float(v) for v in sums.tolist())
        if count > 0:
            self.rt = sign_sum / count
            images = (
                self.batch_size
                * self.interval
                * (self.processes.world_size if self.processes is not None else 1)
            )
            change = math.copysign(images / (self.kimg * 1000), self.rt - self.target)
            if self.rt == self.target:
                change = 0.0
            self.p = min(max(self.p + change, 0.0), P_MAX)
        self.sign_sum.zero_()
        self.count.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {
            "p": self.p, "rt": self.rt,
            "sign_sum": self.sign_sum.cpu().clone(), "count": self.count.cpu().clone(),
        }  # fmt: skip

    def load_state_dict(self, state) -> None:
        p, rt = state["p"], state["rt"]
        if not isinstance(p, float) or not 0 <= p <= P_MAX or not isinstance(rt, float):
            raise ValueError(
                f"expected p a float in [0, {P_MAX}] and rt a float, got {p!r}, {rt!r}"
            )
        self.p, self.rt = p, rt
        self.sign_sum.copy_(state["sign_sum"])
        self.count.copy_(state["count"])


class LeCam:
    """LeCam regularisation's anchors and term (see the module docstring)."""

    def __init__(self, weight: float, decay: float, device) -> None:
        self.weight, self.decay = weight, decay
        self.anchors = torch.zeros(2, dtype=torch.float32, device=device)  # (real, fake)
        self.started = torch.zeros((), dtype=torch.bool, device=device)

    def penalty(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Updates the anchors with this step's means, then returns the weighted term."""
        with torch.no_grad():
            means = torch.stack(
                [real_logits.detach().float().mean(), fake_logits.detach().float().mean()]
            )
            moved = self.anchors * self.decay + means * (1 - self.decay)
            self.anchors.copy_(torch.where(self.started, moved, means))
            self.started.fill_(True)
        anchor_real, anchor_fake = self.anchors[0], self.anchors[1]
        term = F.relu(real_logits.float() - anchor_fake).pow(2).mean()
        term = term + F.relu(anchor_real - fake_logits.float()).pow(2).mean()
        return self.weight * term

    def state_dict(self) -> dict[str, Any]:
        return {"anchors": self.anchors.cpu().clone(), "started": self.started.cpu().clone()}

    def load_state_dict(self, state) -> None:
        anchors, started = state["anchors"], state["started"]
        if not isinstance(anchors, torch.Tensor) or anchors.shape != (2,):
            raise ValueError(f"expected anchors a tensor [2], got {anchors!r}")
        self.anchors.copy_(anchors)
        self.started.copy_(started)
