"""The real set's features, computed once per run and kept in its folder (real_features.pt).

Every evaluation during training compares generated images with the same real set through
the same extractor, so its features are computed once and cached in the run folder; a resumed
run reads them instead of recomputing. The file is keyed by what the features depend on: the
data (its name and a sha256 of its pixels), the extractor (its name and a digest of its
weights), n, and the streaming settings; a file whose key differs is recomputed and replaced.

It is written atomically and read with ``torch.load(weights_only=True)`` (tensors, strings and
numbers only; no code), and carries a sha256 of its contents (fastgen.checkpoint_io's
``state_digest``): a damaged file is recomputed with a RunFileWarning, never used.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from fastgen.metrics.features import FeatureAccumulator
from fastgen.metrics.statistics import FeatureReservoir, RunningStatistics

FORMAT = "fastgen-real-features"
VERSION = 1
CACHE_NAME = "real_features.pt"


def tensor_digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def data_key(dataset) -> str | None:
    """A digest naming a dataset's images (None when it exposes no image tensor)."""
    pixels = getattr(dataset, "pixels", None)
    images = pixels if pixels is not None else getattr(dataset, "images", None)
    if not isinstance(images, torch.Tensor):
        return None
    return f"{getattr(dataset, 'name', '')}:{tensor_digest(images)}"


def extractor_key(extractor) -> str:
    """The extractor's class, name, feature size and a digest of its weights and buffers."""
    from fastgen.checkpoint_io import state_digest

    digest = state_digest(dict(extractor.state_dict()))
    return f"{type(extractor).__qualname__}:{extractor.name}:{extractor.feature_dim}:{digest}"


def accumulator_state(accumulator: FeatureAccumulator) -> dict[str, Any]:
    """What the metrics read from a real set's accumulator: the statistics and the samples."""
    state: dict[str, Any] = {"count": accumulator.count, "stats": accumulator.stats.state_dict()}
    for name in ("sample", "pixels"):
        reservoir = getattr(accumulator, name)
        if reservoir is not None:
            state[name] = {
                "rows": reservoir.features.clone(),
                "seen": reservoir.seen,
                "capacity": reservoir.capacity,
            }
    return state


def accumulator_from_state(state: dict[str, Any]) -> FeatureAccumulator:
    accumulator = FeatureAccumulator(sample_size=0)
    accumulator.stats = RunningStatistics.from_state_dict(state["stats"])
    accumulator.count = int(state["count"])
    for name in ("sample", "pixels"):
        entry = state.get(name)
        if entry is not None:
            reservoir = FeatureReservoir.from_rows(entry["rows"], entry["seen"], entry["capacity"])
            setattr(accumulator, name, reservoir)
    return accumulator


def load_cached(folder, key: dict[str, Any]) -> FeatureAccumulator | None:
    """The cached accumulator of folder/real_features.pt when its key is `key`; None when
    there is none, or one of another key; a damaged file is a RunFileWarning and None."""
    from fastgen.checkpoint_io import RunFileWarning, state_digest

    path = Path(folder) / CACHE_NAME
    if not path.is_file():
        return None
    try:
        state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
        intact = (
            isinstance(state, dict)
            and state.get("format") == FORMAT
            and state.get("sha256") == state_digest(state)
        )
    except Exception:  # torch raises several types for a truncated or foreign file
        intact = False
    if not intact:
        warnings.warn(
            f"fastgen.metrics: {path} is damaged or not a real-features cache; the real set's "
            f"features are computed again",
            RunFileWarning,
            stacklevel=2,
        )
        return None
    if state.get("version") != VERSION or state.get("key") != key:
        return None  # other data, extractor or settings: recomputed and replaced
    return accumulator_from_state(state["features"])


def save_cached(folder, key: dict[str, Any], accumulator: FeatureAccumulator) -> Path:
    """Writes folder/real_features.pt atomically (with its key and checksum)."""
    from fastgen.checkpoint_io import state_digest
    from fastgen.utils.atomic import atomic_write

    path = Path(folder) / CACHE_NAME
    state = {
        "format": FORMAT,
        "version": VERSION,
        "key": key,
        "features": accumulator_state(accumulator),
    }
    state["sha256"] = state_digest(state)
    atomic_write(path, lambda handle: torch.save(state, handle), fn="fastgen.metrics.save_cached")
    return path
