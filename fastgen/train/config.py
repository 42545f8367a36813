"""Training configurations: plain dataclasses that round-trip through JSON (config.json and
checkpoints hold ``to_dict()``; ``from_dict`` rebuilds and checks it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

GAN_LOSSES = ("bce", "hinge", "wgan-gp")
AMP_MODES = ("", "bf16", "fp16")
AUGMENTATIONS = ("color", "translation", "cutout")


@dataclass
class _TrainConfig:
    """Fields shared by every trainer."""

    data: str = "digits"  # dataset source (recorded; the caller loads the dataset)
    resolution: int = 32
    channels: int | None = None  # None: take it from the dataset
    steps: int = 2000
    batch_size: int = 64  # per process (DDP: each rank draws its own batch of this size)
    beta1: float = 0.5
    beta2: float = 0.999
    amp: str = (
        ""  # "" (float32), "bf16" (autocast) or "fp16" (autocast + a GradScaler per optimizer)
    )
    compile: bool = False  # torch.compile the models' forward passes
    fused: bool = True  # fastgen.nn fused layers (False: stock torch.nn layers)
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (for GPU runs)
    sample_every: int = 500  # sample grid every N steps (0: only at the end)
    checkpoint_every: int = 1000  # checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = 3
    eval_every: int = 0  # call the evaluator every N steps (0: never)
    log_every: int = 10  # a log.jsonl row every N steps
    out_dir: str = "runs/train"
    latent_dim: int = 100
    width: int = 32
    num_threads: int = 0  # torch.set_num_threads (0: leave torch's default)
    sync_bn: bool = False  # DDP: synchronise batch-norm statistics across ranks
    max_nonfinite: int = 5  # stop after this many non-finite losses in a row
    num_samples: int = 64  # images in each sample grid

    kind = "base"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        values = dict(values)
        kind = values.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ValueError(f"{cls.__name__}.from_dict: config is for {kind!r}, not {cls.kind!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}.from_dict: unknown fields {', '.join(unknown)}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        name = type(self).__name__
        for field in (
            "steps",
            "batch_size",
            "latent_dim",
            "width",
            "keep_checkpoints",
            "num_samples",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {field} must be an int >= 1, got {value!r}")
        for field in (
            "sample_every",
            "checkpoint_every",
            "eval_every",
            "log_every",
            "num_threads",
            "max_nonfinite",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: {field} must be an int >= 0, got {value!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"{name}: amp must be '', 'bf16' or 'fp16', got {self.amp!r}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"{name}: channels must be None, 1 or 3, got {self.channels!r}")
        for field in ("beta1", "beta2"):
            value = getattr(self, field)
            if not 0 <= value < 1:
                raise ValueError(f"{name}: {field} must be in [0, 1), got {value!r}")


@dataclass
class GANConfig(_TrainConfig):
    """DCGAN training. Defaults: the main job (32x32 digits in a few CPU minutes)."""

    out_dir: str = "runs/dcgan"
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    loss: str = "bce"  # "bce" (non-saturating, from logits), "hinge" or "wgan-gp"
    label_smoothing: float = 0.0  # one-sided: real targets are 1 - label_smoothing
    r1_gamma: float = 0.0  # R1 penalty gamma / 2 * E||grad D(real)||^2 (0: off)
    gp_weight: float = 10.0  # WGAN-GP gradient-penalty weight (loss="wgan-gp" only)
    spectral_norm: bool = False  # spectral norm on D's convs
    # EMA of G's weights for samples and evaluation (0: a plain copy of G), with the warm-up
    # decay_t = min(ema_decay, (1 + t) / (10 + t)).
    ema_decay: float = 0.999
    diffaugment: str = ""  # "" or a comma list of color, translation, cutout
    conditional: bool = False  # class-conditional G and D (needs a labelled dataset)

    kind = "dcgan"

    def validate(self) -> None:
        super().validate()
        if self.loss not in GAN_LOSSES:
            raise ValueError(
                f"GANConfig: loss must be one of {', '.join(GAN_LOSSES)}, got {self.loss!r}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(
                f"GANConfig: label_smoothing must be in [0, 1), got {self.label_smoothing!r}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"GANConfig: ema_decay must be in [0, 1), got {self.ema_decay!r}")
        for field in ("lr_g", "lr_d"):
            if not getattr(self, field) > 0:
                raise ValueError(f"GANConfig: {field} must be > 0, got {getattr(self, field)!r}")
        for field in ("r1_gamma", "gp_weight"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"GANConfig: {field} must be >= 0, got {getattr(self, field)!r}")
        self.augmentations()

    def augmentations(self) -> list[str]:
        names = [a.strip() for a in self.diffaugment.split(",") if a.strip()]
        bad = [a for a in names if a not in AUGMENTATIONS]
        if bad:
            raise ValueError(
                f"GANConfig: diffaugment must be a comma list of {', '.join(AUGMENTATIONS)}, "
                f"got {self.diffaugment!r}"
            )
        return names


@dataclass
class VAEConfig(_TrainConfig):
    """Convolutional VAE training."""

    out_dir: str = "runs/vae"
    beta1: float = 0.9
    latent_dim: int = 32
    lr: float = 1e-3
    beta: float = 1.0  # weight of the KL term
    kl_warmup: int = 0  # steps over which the KL weight ramps linearly from 0 to beta
    likelihood: str = "bernoulli"  # or "gaussian"

    kind = "vae"

    def validate(self) -> None:
        super().validate()
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(
                f"VAEConfig: likelihood must be 'bernoulli' or 'gaussian', got {self.likelihood!r}"
            )
        if not self.lr > 0:
            raise ValueError(f"VAEConfig: lr must be > 0, got {self.lr!r}")
        if not self.beta >= 0:
            raise ValueError(f"VAEConfig: beta must be >= 0, got {self.beta!r}")
        if not isinstance(self.kl_warmup, int) or self.kl_warmup < 0:
            raise ValueError(f"VAEConfig: kl_warmup must be an int >= 0, got {self.kl_warmup!r}")

    def kl_weight(self, step: int) -> float:
        """beta, ramped linearly over the first kl_warmup steps (step counts from 1)."""
        if self.kl_warmup <= 0:
            return self.beta
        return self.beta * min(1.0, step / self.kl_warmup)


def config_from_dict(values: dict[str, Any]):
    """A GANConfig or VAEConfig from ``to_dict()`` output, by its "kind"."""
    kind = values.get("kind")
    for cls in (GANConfig, VAEConfig):
        if kind == cls.kind:
            return cls.from_dict(values)
    raise ValueError(f"fastgen.train: config kind must be 'dcgan' or 'vae', got {kind!r}")
