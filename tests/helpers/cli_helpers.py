"""What the command-line tests share (test_cli, test_interrupt, the provenance tests): run_cli,
fastgen's main() as a test calls it, and TINY, the options of a tiny `fastgen train` run."""

from __future__ import annotations

import torch

from fastgen.cli import main


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of main(argv), whether it returns or exits."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _fused_layers_work() -> bool:
    """False while any fused op is still a NotImplementedError placeholder."""
    from fastgen.models import ConvVAE, DCGANDiscriminator, DCGANGenerator

    try:
        images = DCGANGenerator(16, 1, latent_dim=8, width=4)(torch.zeros(2, 8))
        DCGANDiscriminator(16, 1, width=4)(images)
        ConvVAE(16, 1, latent_dim=8, width=4).loss(images)
        return True
    except NotImplementedError:
        return False


# the CLI path is the same either way; fused layers are used as soon as their ops exist
FUSED = [] if _fused_layers_work() else ["--no-fused"]
TINY = ["--resolution", "16", "--width", "4", "--latent-dim", "8", "--batch-size", "8", "--steps", "4",
        "--sample-every", "2", "--checkpoint-every", "2", "--device", "cpu", "--seed", "1", "--quiet", *FUSED]  # fmt: skip
