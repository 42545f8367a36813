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
    a checkpoint says where its streams stood, and check_rng_entry checks them on resume."""
    state: dict[str, Any] = {"seed": seed, "step": step, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def check_rng_entry(state: Any) -> None:
    """Checks a checkpoint's "rng" entry is what rng_state writes (a ValueError otherwise).
    Nothing restores it: the first step after a resume re-seeds (seed_step), so no training
    draw depends on it (tests/train/test_train.py::test_resume_does_not_need_the_rng_state)."""
    if not isinstance(state, dict):
        raise ValueError(f"must be a dict, not {type(state).__name__}")
    expected = torch.get_rng_state()
    generator = state.get("torch", expected)
    if not (
        isinstance(generator, torch.Tensor)
        and generator.dtype == torch.uint8
        and generator.shape == expected.shape
    ):
        raise ValueError(
            f"'torch' must be a CPU generator state (uint8 tensor of shape "
            f"{tuple(expected.shape)}), got {getattr(generator, 'shape', type(generator).__name__)}"
        )
    devices = state.get("cuda", [])
    if not isinstance(devices, (list, tuple)) or not all(
        isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in devices
    ):
        raise ValueError("'cuda' must be a list of CUDA generator states (uint8 tensors)")
