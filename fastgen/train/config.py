"""fastgen.train.config: a public alias, kept so that code written against it goes on working.
The training configurations live in fastgen.config (no torch, so the command line reads them
without importing the trainers); nothing in fastgen imports this module, new code imports
fastgen.config."""

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
