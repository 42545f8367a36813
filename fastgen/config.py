"""Training configurations: plain dataclasses that round-trip through JSON (config.json and
checkpoints hold ``to_dict()``; ``from_dict`` rebuilds and checks it), and the one source of
the ``fastgen train`` options: each field's metadata gives its help text, choices and
option group (fastgen.cli derives the parser from it). No torch here, so ``fastgen --help``
stays fast. (``fastgen.train.config``, a public alias, re-exports everything.)"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fastgen.utils.checks import check_int, check_resolution
from fastgen.utils.errors import ArgumentError

GAN_LOSSES = ("bce", "hinge", "wgan-gp")
AMP_MODES = ("", "bf16", "fp16")
MEMORY_FORMATS = ("auto", "nchw", "channels_last")
AUGMENTATIONS = ("color", "translation", "cutout")
LIKELIHOODS = ("bernoulli", "gaussian")
# What --best-metric may name: an evaluation result, and whether lower is better. c2st is the
# classifier's held-out accuracy: 0.5 (cannot tell generated from real) is the best it gets.
BEST_METRICS = {
    "fid": "min", "kid": "min", "c2st": "min", "is": "max", "precision": "max",
    "recall": "max", "nll_iw": "min", "bits_per_dim_iw": "min",
}  # fmt: skip
# The int fields every config checks: sizes (>= 1), and intervals and limits (>= 0, where 0
# means off or torch's default).
POSITIVE_INTS = ("steps", "batch_size", "latent_dim", "width", "keep_checkpoints", "num_samples")
NON_NEGATIVE_INTS = (
    "sample_every",
    "checkpoint_every",
    "eval_every",
    "log_every",
    "num_threads",
    "max_nonfinite",
    "limit",
)


def option(default, help: str, group: str = "run", **cli):
    """A config field with its command-line description: `help`, the option `group` (data,
    run, model, dcgan, vae) and optional `choices` (the values validate() accepts, and the
    option's), `flag` (the option's name when it is not the field's) or `hidden` (not an
    option)."""
    return dataclasses.field(default=default, metadata={"help": help, "group": group, **cli})


def _check_choice(owner: str, field: dataclasses.Field, value) -> None:
    """A field with `choices` holds one of them, or None where None is its default (unset)."""
    choices = field.metadata.get("choices")
    if choices is None:
        return
    allowed = (None, *choices) if field.default is None else choices
    if value not in allowed:
        shown = ", ".join(repr(choice) for choice in allowed)
        raise ArgumentError(owner, field.name, f"must be one of {shown}, got {value!r}")


def _check_fraction(owner: str, field: str, value) -> None:
    if not 0 <= value < 1:
        raise ArgumentError(owner, field, f"must be in [0, 1), got {value!r}")


def _check_at_least(owner: str, field: str, value, bound: float, *, strict: bool) -> None:
    """A number > bound (strict) or >= bound (NaN fails both)."""
    if not (value > bound if strict else value >= bound):
        raise ArgumentError(
            owner, field, f"must be {'>' if strict else '>='} {bound:g}, got {value!r}"
        )


@dataclass
class _TrainConfig:
    """Fields shared by every trainer."""

    data: str = option(
        "digits", "digits, photos, an image folder or an MNIST IDX file/folder", "data"
    )
    resolution: int = option(32, "image size (power of two, 16..256)", "data")
    channels: int | None = option(
        None, "convert the data to 1 or 3 channels (none: keep the dataset's)", "data",
        choices=(1, 3),
    )  # fmt: skip
    steps: int = option(2000, "training steps")
    # per process (DDP: each rank draws its own batch of this size)
    batch_size: int = option(64, "images per step and process")
    beta1: float = option(0.5, "Adam beta1", "optimiser")
    beta2: float = option(0.999, "Adam beta2", "optimiser")
    amp: str = option(
        "", "mixed precision: bf16 (autocast), fp16 (autocast + GradScaler) or none", "run",
        choices=AMP_MODES,
    )  # fmt: skip
    compile: bool = option(False, "torch.compile the models' forward passes")
    memory_format: str = option(
        "auto", "layout of the models' weights and activations: auto (channels_last on a CPU "
        "with bf16 instructions under --amp bf16, NCHW otherwise), nchw, channels_last", "run",
        choices=MEMORY_FORMATS,
    )  # fmt: skip
    fused: bool = option(True, "use stock torch.nn layers instead of fastgen's", flag="no-fused")
    device: str = option("auto", "auto (cuda if available), cpu, cuda, cuda:1, ...")
    seed: int = option(0, "seed of every random draw (data order, init, noise)")
    deterministic: bool = option(False, "torch.use_deterministic_algorithms (GPU)")
    sample_every: int = option(500, "sample grid every K steps (0: only at the end)")
    checkpoint_every: int = option(1000, "checkpoint every K steps (0: only at the end)")
    keep_checkpoints: int = option(3, "checkpoints kept (the newest)")
    eval_every: int = option(0, "evaluate every K steps (0: never)")
    best_metric: str = option(
        "fid", "with --eval-every, keep checkpoints/best.pt for this metric (lower is better; "
        "is, precision, recall: higher)", choices=tuple(BEST_METRICS),
    )  # fmt: skip
    limit: int = option(0, "train on N images: a seeded, class-balanced subset when the data "
                        "has labels, else the first N (0: all)", "data")  # fmt: skip
    log_every: int = option(10, "a log.jsonl row every K steps")
    out_dir: str = option("runs/train", "output folder (config, log, samples, checkpoints)",
                          flag="out")  # fmt: skip
    latent_dim: int = option(100, "latent size", "model")
    width: int = option(32, "channels of the finest layer", "model")
    num_threads: int = option(0, "torch CPU threads (0: torch's default)", flag="threads")
    sync_bn: bool = option(False, "DDP: synchronise batch-norm statistics across ranks")
    max_nonfinite: int = option(5, "stop after this many non-finite losses in a row")
    num_samples: int = option(64, "images in each sample grid")
    provenance: bool = option(
        True, "leave the XMP provenance marks out of the sample grids", flag="no-provenance"
    )

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
        for field in POSITIVE_INTS:
            check_int(name, field, getattr(self, field), minimum=1)
        for field in NON_NEGATIVE_INTS:
            check_int(name, field, getattr(self, field), minimum=0)
        check_resolution(name, self.resolution)  # the models' rule, refused before any work
        for field in dataclasses.fields(self):
            _check_choice(name, field, getattr(self, field.name))
        for field in ("beta1", "beta2"):
            _check_fraction(name, field, getattr(self, field))


@dataclass
class GANConfig(_TrainConfig):
    """DCGAN training. Defaults: the main job (32x32 digits in a few CPU minutes)."""

    out_dir: str = option("runs/dcgan", "output folder (config, log, samples, checkpoints)",
                          flag="out")  # fmt: skip
    lr_g: float = option(2e-4, "generator learning rate", "dcgan")
    lr_d: float = option(2e-4, "discriminator learning rate", "dcgan")
    loss: str = option(
        "bce", "bce (non-saturating, from logits), hinge or wgan-gp", "dcgan", choices=GAN_LOSSES
    )
    label_smoothing: float = option(0.0, "one-sided: real targets are 1 - label_smoothing", "dcgan")
    r1_gamma: float = option(0.0, "R1 penalty gamma / 2 * E||grad D(real)||^2 (0: off)", "dcgan")
    gp_weight: float = option(10.0, "WGAN-GP gradient-penalty weight (wgan-gp only)", "dcgan")
    spectral_norm: bool = option(False, "spectral norm on D's convolutions", "dcgan")
    # EMA of G's weights for samples and evaluation (0: a plain copy of G), with the warm-up
    # decay_t = min(ema_decay, (1 + t) / (10 + t)).
    ema_decay: float = option(0.999, "EMA decay of G's weights for samples (0: a copy)", "dcgan")
    diffaugment: str = option("", "DiffAugment: a comma list of color, translation, cutout",
                              "dcgan")  # fmt: skip
    conditional: bool = option(False, "class-conditional G and D (a labelled dataset)", "dcgan")
    # Adaptive discriminator augmentation (Karras et al. 2020), see fastgen.train.ada.
    ada: bool = option(False, "adaptive discriminator augmentation: flips, integer "
                       "translation and colour with a probability p tuned to --ada-target",
                       "dcgan")  # fmt: skip
    ada_target: float = option(0.6, "ADA: the E[sign(D(real))] that p is tuned to hold", "dcgan")
    ada_interval: int = option(4, "ADA: steps between adjustments of p", "dcgan")
    ada_kimg: float = option(20.0, "ADA: thousands of images over which p can move by 1",
                             "dcgan")  # fmt: skip
    lecam: float = option(0.0, "LeCam regularisation weight (Tseng et al. 2021; 0: off)", "dcgan")
    lecam_decay: float = option(0.99, "LeCam: EMA decay of its anchors (mean D outputs)",
                                "dcgan")  # fmt: skip

    kind = "dcgan"

    def validate(self) -> None:
        super().validate()
        for field in ("label_smoothing", "ema_decay"):
            _check_fraction("GANConfig", field, getattr(self, field))
        for field in ("lr_g", "lr_d"):
            _check_at_least("GANConfig", field, getattr(self, field), 0, strict=True)
        for field in ("r1_gamma", "gp_weight", "lecam"):
            _check_at_least("GANConfig", field, getattr(self, field), 0, strict=False)
        for field in ("ada_target", "lecam_decay"):
            _check_fraction("GANConfig", field, getattr(self, field))
        check_int("GANConfig", "ada_interval", self.ada_interval, minimum=1)
        _check_at_least("GANConfig", "ada_kimg", self.ada_kimg, 0, strict=True)
        self.augmentations()

    def augmentations(self) -> list[str]:
        names = [a.strip() for a in self.diffaugment.split(",") if a.strip()]
        bad = [a for a in names if a not in AUGMENTATIONS]
        if bad:
            raise ArgumentError(
                "GANConfig",
                "diffaugment",
                f"must be a comma list of {', '.join(AUGMENTATIONS)}, got {self.diffaugment!r}",
            )
        return names


@dataclass
class VAEConfig(_TrainConfig):
    """Convolutional VAE training."""

    out_dir: str = option("runs/vae", "output folder (config, log, samples, checkpoints)",
                          flag="out")  # fmt: skip
    beta1: float = option(0.9, "Adam beta1", "optimiser")
    latent_dim: int = option(32, "latent size", "model")
    lr: float = option(1e-3, "learning rate", "vae")
    beta: float = option(1.0, "weight of the KL term", "vae")
    kl_warmup: int = option(0, "steps over which the KL weight ramps from 0 to beta", "vae")
    likelihood: str = option("bernoulli", "decoder likelihood", "vae", choices=LIKELIHOODS)

    kind = "vae"

    def validate(self) -> None:
        super().validate()
        _check_at_least("VAEConfig", "lr", self.lr, 0, strict=True)
        _check_at_least("VAEConfig", "beta", self.beta, 0, strict=False)
        check_int("VAEConfig", "kl_warmup", self.kl_warmup, minimum=0)

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
