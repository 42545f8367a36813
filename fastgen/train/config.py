"""The training configurations live in fastgen.config (no torch, so the command line can
read them without importing the trainers); this module keeps their old import path."""

from fastgen.config import (  # noqa: F401
    AMP_MODES,
    AUGMENTATIONS,
    GAN_LOSSES,
    LIKELIHOODS,
    GANConfig,
    VAEConfig,
    _TrainConfig,
    config_from_dict,
)
