"""A small CNN trained on the embedded digits: the download-free feature extractor.

Shipped weights: fastgen/assets/digits_classifier.pt (a plain state_dict, loaded with
``torch.load(weights_only=True)``), trained by scripts/train_digits_classifier.py with seed 0
on ``load_dataset("digits", split="train")`` (1,617 images, 32x32, [-1, 1]).
Held-out accuracy on ``split="test"``: 179 of 180 images (99.4%); train accuracy 100%.

Architecture (input [N, 1, 32, 32] in [-1, 1]):
    3 x (Conv3x3 -> BatchNorm -> ReLU -> MaxPool2): 32 -> 16 -> 8 -> 4, channels 32, 64, 128
    global average pool -> Linear(128, 128) -> ReLU   = features [N, 128] (the penultimate layer)
    Dropout -> Linear(128, 10)                        = logits [N, 10]

``DigitsExtractor`` wraps it as a ``FeatureExtractor``: it converts RGB input to grey (ITU-R
601 luma, as fastgen.data does) and resizes to 32x32 (bilinear; antialiased when shrinking),
so generators of any resolution can be scored. Features give "digits-FID", KID and
precision/recall; logits give the Inception Score (max 10) and mode coverage.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastgen.metrics.features import FeatureExtractor, Features, check_image_range

WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "digits_classifier.pt"
RESOLUTION = 32
NUM_CLASSES = 10
FEATURE_DIM = 128
# Held-out accuracy of the shipped weights on load_dataset("digits", split="test").
TEST_ACCURACY = 179 / 180  # 0.9944, scripts/train_digits_classifier.py (seed 0, 40 epochs)


class DigitsClassifier(nn.Module):
    """images [N, 1, 32, 32] in [-1, 1] -> (features [N, 128], logits [N, 10])."""

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), dropout: float = 0.3) -> None:
        super().__init__()
        layers, c_in = [], 1
        for c_out in widths:
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.embed = nn.Linear(c_in, FEATURE_DIM)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.body(images).mean(dim=(2, 3))
        features = F.relu(self.embed(pooled))
        return features, self.head(self.dropout(features))


def to_digits_input(images: torch.Tensor) -> torch.Tensor:
    """Any [N, 1|3, H, W] in [-1, 1] -> [N, 1, 32, 32] as the classifier was trained on."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            "fastgen.metrics.DigitsExtractor: images expected [N, 1 or 3, H, W], got "
            f"{tuple(images.shape)}"
        )
    check_image_range(images, "DigitsExtractor")
    if images.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
        images = (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    if images.shape[-2:] != (RESOLUTION, RESOLUTION):
        shrink = images.shape[-1] > RESOLUTION
        images = F.interpolate(
            images,
            size=(RESOLUTION, RESOLUTION),
            mode="bilinear",
            align_corners=False,
            antialias=shrink,
        )
    return images.clamp(-1, 1)


def load_digits_classifier(path: str | Path | None = None) -> DigitsClassifier:
    """The classifier in eval mode with the shipped (or given) weights."""
    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"fastgen.metrics.load_digits_classifier: weights not found at {path}; retrain them "
            "with `python scripts/train_digits_classifier.py`"
        )
    model = DigitsClassifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


class DigitsExtractor(FeatureExtractor):
    """``FeatureExtractor`` around the shipped digits classifier (features 128, logits 10)."""

    name = "digits"
    feature_dim = FEATURE_DIM
    num_classes = NUM_CLASSES

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        self.classifier = load_digits_classifier(path)

    def forward(self, images: torch.Tensor) -> Features:
        features, logits = self.classifier(to_digits_input(images.float()))
        return Features(features, logits)
