"""Inception-v3 features (pool3, 2048) and logits from a LOCAL weights file; never downloads.

Weights: a state_dict file, found in this order:
    1. the ``weights`` argument (``fastgen eval --inception-weights PATH``),
    2. the environment variable FASTGEN_INCEPTION_WEIGHTS,
    3. ~/.cache/fastgen/pt_inception-2015-12-05-6726825d.pth (DEFAULT_PATH).
Two files are recognised, by their sha256 (verified before loading; the 8 hex digits in their
published names are the start of it, as torch.hub names files):
    pt_inception-2015-12-05-6726825d.pth  pytorch-fid's port of the TF 2015 graph that the
                                          reference FID/IS numbers use: 1008 logits, TF-style
                                          pooling (variant "fid"); use this one for FID.
    inception_v3_google-0cc3c7bd.pth      torchvision's ImageNet weights: 1000 logits (variant
                                          "torchvision"); FID values are NOT comparable to papers.
Any other file is refused unless its full sha256 is given (``sha256=`` or the environment
variable FASTGEN_INCEPTION_SHA256); the variant then follows from the fc layer (1008 -> "fid").
Files load with ``torch.load(weights_only=True)``: a weights file cannot run code.

Network: the Inception-v3 of Szegedy et al. (2016) with torchvision's parameter names, so both
files load as they are (the auxiliary classifier's weights, if present, are ignored). Input
[N, 1|3, H, W] in [-1, 1] (checked; grey is repeated to RGB) is resized bilinearly to 299x299,
the range both weight sets expect. The logits are ``pool3 @ fc.weight.T`` WITHOUT ``fc.bias``:
the original Inception Score code multiplies pool3 by the softmax weights only (as do
torch-fidelity's and torchmetrics' ``logits_unbiased``), and published IS values are of
those; with the bias the class probabilities, and the score, differ. The "fid" variant differs from torchvision's in three places, as in
the TF graph: average pools in blocks 5b-5d, 6b-6e and 7b exclude the padding from the mean,
and block 7c pools with a max instead of an average.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastgen.metrics.features import FeatureExtractor, Features, check_image_range

ENV_WEIGHTS = "FASTGEN_INCEPTION_WEIGHTS"
ENV_SHA256 = "FASTGEN_INCEPTION_SHA256"
FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
DEFAULT_PATH = Path("~/.cache/fastgen").expanduser() / FID_FILE
# sha256 prefix (from the published file name) -> variant.
KNOWN_SHA256_PREFIXES = {"6726825d": "fid", "0cc3c7bd": "torchvision"}
INPUT_SIZE = 299
FEATURE_DIM = 2048


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU, parameter names conv.* and bn.*."""

    def __init__(self, c_in: int, c_out: int, kernel, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Mixed(nn.Module):
    """One Inception block, described by data instead of a class per block type.

    convs: name -> (c_in, c_out, kernel, stride, padding); the names are torchvision's.
    branches: each a chain of conv names; a tuple stage runs its convs side by side on the
        same input and concatenates them (the 1x3 / 3x1 pairs of the E blocks).
    pool: how the pooling branch pools ("avg", "avg_exclude_pad", "max" with stride 1, or
        "max_reduce" = 3x3 stride 2, no padding); pool_conv: the 1x1 conv after it, if any.
    The output concatenates the branches in order, the pooling branch last.
    """

    def __init__(self, convs: dict, branches: list, pool: str, pool_conv: str | None) -> None:
        super().__init__()
        for name, spec in convs.items():
            self.add_module(name, BasicConv2d(*spec))
        self.branches, self.pool, self.pool_conv = branches, pool, pool_conv

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "avg":
            return F.avg_pool2d(x, 3, stride=1, padding=1)
        if self.pool == "avg_exclude_pad":
            return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        if self.pool == "max":
            return F.max_pool2d(x, 3, stride=1, padding=1)
        return F.max_pool2d(x, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for chain in self.branches:
            h = x
            for stage in chain:
                if isinstance(stage, tuple):
                    h = torch.cat([getattr(self, name)(h) for name in stage], 1)
                else:
                    h = getattr(self, stage)(h)
            outputs.append(h)
        pooled = self._pool(x)
        outputs.append(getattr(self, self.pool_conv)(pooled) if self.pool_conv else pooled)
        return torch.cat(outputs, 1)


def block_a(c_in: int, pool_features: int, pool: str) -> Mixed:
    convs = {
        "branch1x1": (c_in, 64, 1),
        "branch5x5_1": (c_in, 48, 1),
        "branch5x5_2": (48, 64, 5, 1, 2),
        "branch3x3dbl_1": (c_in, 64, 1),
        "branch3x3dbl_2": (64, 96, 3, 1, 1),
        "branch3x3dbl_3": (96, 96, 3, 1, 1),
        "branch_pool": (c_in, pool_features, 1),
    }
    branches = [["branch1x1"], ["branch5x5_1", "branch5x5_2"], ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]]  # fmt: skip
    return Mixed(convs, branches, pool, "branch_pool")


def block_b(c_in: int) -> Mixed:  # 35x35 -> 17x17
    convs = {
        "branch3x3": (c_in, 384, 3, 2),
        "branch3x3dbl_1": (c_in, 64, 1),
        "branch3x3dbl_2": (64, 96, 3, 1, 1),
        "branch3x3dbl_3": (96, 96, 3, 2),
    }
    branches = [["branch3x3"], ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]]
    return Mixed(convs, branches, "max_reduce", None)


def block_c(c_in: int, c7: int, pool: str) -> Mixed:
    row, col = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))  # (kernel, stride, padding)
    convs = {
        "branch1x1": (c_in, 192, 1),
        "branch7x7_1": (c_in, c7, 1),
        "branch7x7_2": (c7, c7, *row),
        "branch7x7_3": (c7, 192, *col),
        "branch7x7dbl_1": (c_in, c7, 1),
        "branch7x7dbl_2": (c7, c7, *col),
        "branch7x7dbl_3": (c7, c7, *row),
        "branch7x7dbl_4": (c7, c7, *col),
        "branch7x7dbl_5": (c7, 192, *row),
        "branch_pool": (c_in, 192, 1),
    }
    branches = [
        ["branch1x1"],
        ["branch7x7_1", "branch7x7_2", "branch7x7_3"],
        [f"branch7x7dbl_{i}" for i in range(1, 6)],
    ]
    return Mixed(convs, branches, pool, "branch_pool")


def block_d(c_in: int) -> Mixed:  # 17x17 -> 8x8
    convs = {
        "branch3x3_1": (c_in, 192, 1),
        "branch3x3_2": (192, 320, 3, 2),
        "branch7x7x3_1": (c_in, 192, 1),
        "branch7x7x3_2": (192, 192, (1, 7), 1, (0, 3)),
        "branch7x7x3_3": (192, 192, (7, 1), 1, (3, 0)),
        "branch7x7x3_4": (192, 192, 3, 2),
    }
    branches = [["branch3x3_1", "branch3x3_2"], [f"branch7x7x3_{i}" for i in range(1, 5)]]
    return Mixed(convs, branches, "max_reduce", None)


def block_e(c_in: int, pool: str) -> Mixed:
    row, col = ((1, 3), 1, (0, 1)), ((3, 1), 1, (1, 0))
    convs = {
        "branch1x1": (c_in, 320, 1),
        "branch3x3_1": (c_in, 384, 1),
        "branch3x3_2a": (384, 384, *row),
        "branch3x3_2b": (384, 384, *col),
        "branch3x3dbl_1": (c_in, 448, 1),
        "branch3x3dbl_2": (448, 384, 3, 1, 1),
        "branch3x3dbl_3a": (384, 384, *row),
        "branch3x3dbl_3b": (384, 384, *col),
        "branch_pool": (c_in, 192, 1),
    }
    branches = [
        ["branch1x1"],
        ["branch3x3_1", ("branch3x3_2a", "branch3x3_2b")],
        ["branch3x3dbl_1", "branch3x3dbl_2", ("branch3x3dbl_3a", "branch3x3dbl_3b")],
    ]
    return Mixed(convs, branches, pool, "branch_pool")


class InceptionV3(nn.Module):
    """images [N, 3, 299, 299] in [-1, 1] -> (pool3 features [N, 2048], bias-free logits
    pool3 @ fc.weight.T [N, num_classes]).

    variant "fid" (1008 classes, TF pooling) or "torchvision" (1000 classes); see the module doc.
    """

    def __init__(self, variant: str = "fid") -> None:
        super().__init__()
        if variant not in ("fid", "torchvision"):
            raise ValueError(
                f"fastgen.metrics.InceptionV3: variant expected 'fid' or 'torchvision', got {variant!r}"
            )
        self.variant = variant
        tf = variant == "fid"
        avg = "avg_exclude_pad" if tf else "avg"
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, 2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, 1, 1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = block_a(192, 32, avg)
        self.Mixed_5c = block_a(256, 64, avg)
        self.Mixed_5d = block_a(288, 64, avg)
        self.Mixed_6a = block_b(288)
        self.Mixed_6b = block_c(768, 128, avg)
        self.Mixed_6c = block_c(768, 160, avg)
        self.Mixed_6d = block_c(768, 160, avg)
        self.Mixed_6e = block_c(768, 192, avg)
        self.Mixed_7a = block_d(768)
        self.Mixed_7b = block_e(1280, avg)
        self.Mixed_7c = block_e(2048, "max" if tf else "avg")
        self.fc = nn.Linear(FEATURE_DIM, 1008 if tf else 1000)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        features = x.mean(dim=(2, 3))
        return features, features @ self.fc.weight.T  # no bias: see the module doc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(weights: str | Path | None = None) -> Path:
    """The weights file to use (argument, environment, default path), or a clear error."""
    candidate = weights or os.environ.get(ENV_WEIGHTS) or DEFAULT_PATH
    path = Path(candidate).expanduser()
    if not path.is_file():
        how = (
            "given"
            if weights
            else (f"from ${ENV_WEIGHTS}" if os.environ.get(ENV_WEIGHTS) else "default path")
        )
        raise FileNotFoundError(
            f"fastgen.metrics.InceptionExtractor: no Inception-v3 weights at {path} ({how}). "
            "fastgen never downloads: put a local copy of pytorch-fid's "
            f"{FID_FILE} (sha256 6726825d...) at {DEFAULT_PATH}, or point --inception-weights / "
            f"${ENV_WEIGHTS} at it (torchvision's inception_v3_google-0cc3c7bd.pth also works, "
            "with FIDs not comparable to published ones); or use --extractor digits"
        )
    return path


def verify_checksum(path: Path, sha256: str | None = None) -> str:
    """Checks the file's sha256; returns the variant it implies ("fid", "torchvision" or "")."""
    digest = sha256_of(path)
    expected = (sha256 or os.environ.get(ENV_SHA256) or "").strip().lower()
    if expected:
        if len(expected) < 8 or not digest.startswith(expected):
            raise ValueError(
                f"fastgen.metrics.InceptionExtractor: {path} has sha256 {digest}, expected "
                f"{expected} (given by sha256= or ${ENV_SHA256}); the file is corrupt or not the "
                "one you meant"
            )
        return KNOWN_SHA256_PREFIXES.get(digest[:8], "")
    if digest[:8] not in KNOWN_SHA256_PREFIXES:
        raise ValueError(
            f"fastgen.metrics.InceptionExtractor: {path} has sha256 {digest}, which is neither "
            f"{FID_FILE} (6726825d...) nor inception_v3_google-0cc3c7bd.pth; if you trust the "
            f"file, pass its sha256 as sha256= or ${ENV_SHA256}"
        )
    return KNOWN_SHA256_PREFIXES[digest[:8]]


def load_inception(weights: str | Path | None = None, sha256: str | None = None) -> InceptionV3:
    """InceptionV3 in eval mode from a local, checksum-verified weights file."""
    path = resolve_weights(weights)
    variant = verify_checksum(path, sha256)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise ValueError(
            f"fastgen.metrics.InceptionExtractor: {path} expected an Inception-v3 state_dict "
            "(with fc.weight), got something else"
        )
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    variant = variant or ("fid" if state["fc.weight"].shape[0] == 1008 else "torchvision")
    model = InceptionV3(variant)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"fastgen.metrics.InceptionExtractor: {path} does not match Inception-v3 ({variant}): {err}"
        ) from err
    return model.eval()


class InceptionExtractor(FeatureExtractor):
    """``FeatureExtractor``: pool3 features (2048) and bias-free class logits of Inception-v3."""

    name = "inception"
    feature_dim = FEATURE_DIM

    def __init__(self, weights: str | Path | None = None, sha256: str | None = None) -> None:
        super().__init__()
        self.network = load_inception(weights, sha256)
        self.num_classes = self.network.fc.out_features

    def forward(self, images: torch.Tensor) -> Features:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                "fastgen.metrics.InceptionExtractor: images expected [N, 1 or 3, H, W], got "
                f"{tuple(images.shape)}"
            )
        check_image_range(images, "InceptionExtractor")
        x = images.float().expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        features, logits = self.network(x)
        return Features(features, logits)
