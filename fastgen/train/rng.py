"""Seeds of a training run.

Reproducibility: the data order and every random draw of step ``s`` on rank ``r`` are
functions of ``(seed, s, r)`` alone: the batch comes from a per-epoch permutation seeded by
``(seed, epoch)`` (fastgen.train.data_order), and torch's generators are re-seeded from
``(seed, s, r)`` at the start of each step (seed_step). A run resumed from a checkpoint at
step k therefore draws exactly what the uninterrupted run draws from step k + 1 on, with no
RNG state to replay.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, well mixed (nearby steps give unrelated streams)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_step(seed: int, step: int, rank: int) -> None:
    """Re-seeds torch (all devices) for step `step` on rank `rank`."""
    torch.manual_seed(mix_seed(seed, step, rank))


def rng_state(seed: int, step: int) -> dict[str, Any]:
    """The checkpoint's "rng" entry: the seed, the step and torch's generator states.

    Resuming does not need the states (seed_step re-seeds every step); they are recorded so
    a checkpoint says where its streams stood, and fastgen.train.checkpoint checks them."""
    state: dict[str, Any] = {"seed": seed, "step": step, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Sets torch's generators to a checkpoint's "rng" entry (a malformed one raises).

    No training draw depends on it: the first step after a resume re-seeds (seed_step).
    fastgen.train.checkpoint.restore_training_state calls it when resuming, which makes a
    checkpoint with a malformed "rng" entry fail to resume."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
