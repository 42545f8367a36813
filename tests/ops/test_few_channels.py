"""The few-channel CPU convolutions (csrc/conv/few_channels): a conv2d from an image (1-4
channels in) and a conv_transpose2d to one (1-4 channels out), forward and backward, against
the float64 reference, in every dtype and layout, on every CPU copy; the same non-finite
results as stock float32; and the measured choice sees them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import conv_helpers

from fastgen import _extension, ops

pytestmark = pytest.mark.skipif(not _extension.LOADED, reason="the fastgen extension is not built")

ORDER = ["baseline", "avx2", "avx512"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]

# conv2d: input (N, S, H, W) and weight (C_out, kH, kW); conv_transpose2d: input (N, C, H, W)
# and weight (S, kH, kW): the image side has S channels, the other side more.
FROM_IMAGE = {
    "dcgan-first": dict(input=(3, 1, 12, 10), weight=(16, 4, 4), stride=2, padding=1,
                        activation="leaky_relu", negative_slope=0.2),
    "rgb-dilated": dict(input=(2, 3, 9, 7), weight=(20, 3, 3), dilation=2, padding=2,
                        stride=(1, 2)),
    "rgba-asymmetric": dict(input=(3, 4, 8, 8), weight=(5, 4, 4), stride=2, padding=(1, 0),
                            bias=False),
    "one-by-one": dict(input=(2, 2, 5, 6), weight=(33, 1, 1), activation="relu"),
    "pad-beyond-input": dict(input=(1, 1, 2, 3), weight=(17, 3, 3), padding=3, stride=3),
}  # fmt: skip
TO_IMAGE = {
    "dcgan-output": dict(input=(3, 16, 5, 6), weight=(1, 4, 4), stride=2, padding=1,
                         activation="tanh"),
    "rgb-output-padding": dict(input=(2, 20, 4, 3), weight=(3, 3, 3), stride=2, padding=1,
                               output_padding=1),
    "dilated-asymmetric": dict(input=(3, 17, 3, 4), weight=(2, 2, 3), stride=(2, 3),
                               padding=(0, 1), dilation=(2, 1), bias=False),
    "rgba-same-size": dict(input=(1, 33, 2, 2), weight=(4, 5, 5), padding=2),
    "one-by-one": dict(input=(2, 9, 3, 5), weight=(1, 1, 1), activation="sigmoid"),
}  # fmt: skip
CASES = [("conv2d", name, c) for name, c in FROM_IMAGE.items()] + [
    ("conv_transpose2d", name, c) for name, c in TO_IMAGE.items()
]


def runnable() -> list[str]:
    supported = _extension._C._cpu_capability()[1]
    return ORDER[: ORDER.index(supported) + 1]


@pytest.fixture
def forced(monkeypatch):
    """fastgen's kernel wherever it has one, no timing."""
    monkeypatch.setenv("FASTGEN_CONV_CPU", "fastgen")
    return monkeypatch


@pytest.mark.parametrize("op,name,config", CASES, ids=[f"{op}-{name}" for op, name, _ in CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "strided"])
def test_matches_float64_reference(forced, op, name, config, dtype, kind):
    conv_helpers.check(op, config, dtype, "cpu", kind)


@pytest.mark.parametrize("op,name,config", CASES[:2] + CASES[5:7], ids=lambda v: str(v)[:20])
def test_every_cpu_copy_gives_the_same_bits(forced, op, name, config):
    """The copies differ only in vector width: each sum is taken in the same order, and
    -ffp-contract=off rounds every product and sum alike, so the results are equal bit for
    bit (float32 and bfloat16)."""
    for dtype in (torch.float32, torch.bfloat16):
        results = {}
        for capability in runnable():
            forced.setenv("FASTGEN_CPU_CAPABILITY", capability)
            out, grads = conv_helpers.run_both(op, config, dtype, "cpu", "channels_last")[0]
            results[capability] = [out, *grads.values()]
        for capability, tensors in results.items():
            for got, want in zip(tensors, results["baseline"]):
                assert torch.equal(got, want), (capability, dtype)


def nonfinite_cases():
    gen = torch.Generator().manual_seed(5)
    image = torch.randn(2, 1, 8, 8, generator=gen)
    many = torch.randn(2, 8, 4, 4, generator=gen)
    weight = torch.randn(8, 1, 4, 4, generator=gen)
    nan_weight = weight.clone()
    nan_weight[0, 0, 0, 0] = float("nan")  # a corner tap: outside the image at the border
    inf_many = many.clone()
    inf_many[0, 0, 0, 0] = float("inf")  # a border pixel of the many side
    inf_image = image.clone()
    inf_image[1, 0, 7, 7] = float("-inf")
    return {
        "nan-weight": (image, many, nan_weight),
        "inf-many-side": (image, inf_many, weight),
        "inf-image-side": (inf_image, many, weight),
    }


@pytest.mark.parametrize("case", ["nan-weight", "inf-many-side", "inf-image-side"])
def test_non_finite_values_land_where_stock_float32_puts_them(forced, case):
    """aten's float32 convolutions skip the taps outside the image, so 0 * Inf there is not a
    NaN; the loops multiply those taps by zero only when every value is finite, and leave them
    out otherwise."""
    image, many, weight = nonfinite_cases()[case]

    def run(conv, x, w):
        x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
        out = conv(x, w, None, 2, 1)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
        return [out, x.grad, w.grad]

    for conv, stock, x in ((ops.conv2d, F.conv2d, image),
                           (ops.conv_transpose2d, F.conv_transpose2d, many)):  # fmt: skip
        ours, theirs = run(conv, x, weight), run(stock, x, weight)
        for got, want in zip(ours, theirs):
            assert torch.equal(got.isnan(), want.isnan()), (conv.__name__, case)
            assert torch.equal(got.isinf(), want.isinf()), (conv.__name__, case)
            finite = want.isfinite()
            torch.testing.assert_close(got[finite], want[finite], rtol=1e-4, atol=1e-4)


def test_the_measured_choice_times_them(monkeypatch):
    """Under the measured policy a layer from or to an image has a fastgen candidate (a
    timed fastgen_ms); five image channels are past kMaxImageChannels and have none."""
    monkeypatch.delenv("FASTGEN_CONV_CPU", raising=False)
    monkeypatch.delenv("FASTGEN_AUTOTUNE", raising=False)
    _extension._C._conv_cpu_reset()
    try:
        x = torch.randn(2, 3, 12, 12, requires_grad=True)
        ops.conv2d(x, torch.randn(16, 3, 4, 4), None, 2, 1).sum().backward()
        records = ops.conv_cpu_choices()
        assert len(records) == 2 and all(r["fastgen_ms"] is not None for r in records)
        _extension._C._conv_cpu_reset()
        ops.conv2d(torch.randn(2, 5, 12, 12), torch.randn(16, 5, 4, 4), None, 2, 1)
        assert all(r["fastgen_ms"] is None for r in ops.conv_cpu_choices())
    finally:
        _extension._C._conv_cpu_reset()
