"""The CPU Winograd F(4x4, 2x2) kernels (csrc/conv/winograd) against float64 stock convolutions.

They serve the 4x4 stride-2 padding-1 layers of fastgen.ops.conv2d and conv_transpose2d on
CPU in float32 (csrc/conv/winograd/winograd_cpu.h says when). Checked here: the three exposed
kernels directly over random shapes and layouts, and that the op really takes that path.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgen import _extension
from fastgen.ops import conv2d, conv_transpose2d
from fastgen.reference import conv2d as reference_conv2d
from fastgen.reference import conv_transpose2d as reference

pytestmark = pytest.mark.skipif(not _extension.LOADED, reason="the fastgen extension is not built")

# Winograd's transforms add rounding: a few 1e-6 of the output's largest value in float32
# (direct convolution: ~2e-7). Compared against float64, relative to that largest value.
REL_TOL = 3e-5


def ops():
    return torch.ops.fastgen


def layout(t: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if kind == "strided":  # every other column of a wider tensor
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t.contiguous()


def assert_near(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.dtype == torch.float32 and actual.shape == expected.shape, what
    scale = expected.abs().max().item() or 1.0
    error = (actual.double() - expected).abs().max().item() / scale
    assert error < REL_TOL, f"{what}: max error {error:.2e} of the largest |value| {scale:.3g}"


sizes = st.tuples(
    st.integers(1, 3),  # batch
    st.integers(1, 40),  # in channels
    st.integers(1, 40),  # out channels
    st.integers(1, 11),  # height
    st.integers(1, 11),  # width
)
kinds = st.sampled_from(["contiguous", "channels_last", "strided"])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(sizes=sizes, kind=kinds)
def test_conv_transpose2d_matches_float64(sizes, kind):
    n, c_in, c_out, h, w = sizes
    g = torch.Generator().manual_seed(n * 1000 + c_in * 10 + h)
    x = torch.randn(n, c_in, h, w, generator=g)
    weight = torch.randn(c_in, c_out, 4, 4, generator=g)
    x_in = layout(x, kind)
    out = ops().winograd_conv_transpose2d(x_in, weight)
    expected = F.conv_transpose2d(x.double(), weight.double(), stride=2, padding=1)
    assert_near(out, expected, f"conv_transpose2d {sizes} {kind}")
    # The library's layout rule: channels_last out for an input that is channels_last and
    # not also plainly contiguous.
    if kind == "channels_last" and not x_in.is_contiguous():
        assert out.is_contiguous(memory_format=torch.channels_last)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(sizes=sizes, kind=kinds)
def test_conv2d_and_weight_grad_match_float64(sizes, kind):
    n, c_in, c_out, h, w = sizes
    h, w = 2 * h, 2 * w  # the conv2d forms take even sizes
    g = torch.Generator().manual_seed(n * 1000 + c_in * 10 + h)
    x = torch.randn(n, c_in, h, w, generator=g)
    weight = torch.randn(c_out, c_in, 4, 4, generator=g)
    grad_out = torch.randn(n, c_out, h // 2, w // 2, generator=g)
    out = ops().winograd_conv2d(layout(x, kind), weight)
    expected = F.conv2d(x.double(), weight.double(), stride=2, padding=1)
    assert_near(out, expected, f"conv2d {sizes} {kind}")
    grad_weight = ops().winograd_conv2d_weight_grad(layout(x, kind), layout(grad_out, kind))
    expected = torch.nn.grad.conv2d_weight(
        x.double(), weight.shape, grad_out.double(), stride=2, padding=1
    )
    assert_near(grad_weight, expected, f"conv2d weight grad {sizes} {kind}")


def test_large_values_and_channels():
    """DCGAN-sized channel counts, inputs far from zero: the error stays relative."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 256, 4, 4, generator=g) * 30 + 100
    weight = torch.randn(256, 128, 4, 4, generator=g) * 0.02
    out = ops().winograd_conv_transpose2d(x, weight)
    expected = F.conv_transpose2d(x.double(), weight.double(), stride=2, padding=1)
    assert_near(out, expected, "large conv_transpose2d")


# 4x4, stride 2, padding 1, >= 32 channels on both sides, >= 32 output tiles of 4x4.
ELIGIBLE = dict(input=(8, 32, 5, 6), c_out=40)


# op name -> (the fastgen op, its stock reference, its Winograd kernel's name)
WINOGRAD_OPS = {
    "conv2d": (conv2d, reference_conv2d.conv2d, "winograd_conv2d"),
    "conv_transpose2d": (conv_transpose2d, reference.conv_transpose2d, "winograd_conv_transpose2d"),
}


def check_op_on_winograd(name, tensors, generator, kind, **kwargs):
    """fastgen.ops.<name> (stride 2, padding 1, `kwargs`) on an eligible layer's (x, weight,
    bias): with no activation the Winograd kernel plus the bias bit for bit; output and
    gradients match the reference in float64; channels_last in, channels_last out and grad."""
    op, reference_op, winograd = WINOGRAD_OPS[name]
    x, weight, bias = tensors
    what = f"{kwargs['activation']} {kind}"
    out = op(x, weight, bias, 2, 1, **kwargs)
    if kwargs["activation"] == "identity":
        plain = getattr(ops(), winograd)(x.detach(), weight.detach())
        assert torch.equal(out.detach(), plain + bias.detach().view(1, -1, 1, 1))
    grad = torch.randn(out.shape, generator=generator)
    grads = torch.autograd.grad(out, tensors, grad)
    leaves = [t.detach().double().requires_grad_() for t in tensors]
    expected = reference_op(*leaves, 2, 1, **kwargs)
    expected_grads = torch.autograd.grad(expected, leaves, grad.double())
    assert_near(out.detach(), expected.detach(), f"output {what}")
    for part, actual, want in zip(("input", "weight", "bias"), grads, expected_grads):
        assert_near(actual, want, f"grad {part} {what}")
    if kind == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert grads[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_op_takes_the_winograd_path(activation, kind):
    """fastgen.ops.conv_transpose2d on an eligible layer is the Winograd kernel bit for bit,
    and its output and gradients match the float64 reference."""
    g = torch.Generator().manual_seed(1)
    x = layout(torch.randn(*ELIGIBLE["input"], generator=g), kind).requires_grad_()
    weight = (torch.randn(32, ELIGIBLE["c_out"], 4, 4, generator=g) * 0.1).requires_grad_()
    bias = torch.randn(ELIGIBLE["c_out"], generator=g).requires_grad_()
    check_op_on_winograd("conv_transpose2d", (x, weight, bias), g, kind, activation=activation)


@pytest.mark.parametrize("activation", ["identity", "leaky_relu"])
@pytest.mark.parametrize("kind", ["contiguous", "channels_last"])
def test_conv2d_op_takes_the_winograd_path(activation, kind):
    g = torch.Generator().manual_seed(3)
    x = layout(torch.randn(16, 32, 10, 6, generator=g), kind).requires_grad_()
    weight = (torch.randn(40, 32, 4, 4, generator=g) * 0.1).requires_grad_()
    bias = torch.randn(40, generator=g).requires_grad_()
    check_op_on_winograd(
        "conv2d", (x, weight, bias), g, kind, activation=activation, negative_slope=0.2
    )


def test_ineligible_layers_keep_the_aten_path():
    """float64, other strides or kernels, and thin layers go to aten: exact to float64."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 5, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(8, 4, 4, 4, generator=g, dtype=torch.float64)
    out = conv_transpose2d(x, weight, None, 2, 1)
    assert_close(out, F.conv_transpose2d(x, weight, stride=2, padding=1))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ops().winograd_conv2d(torch.randn(1, 3, 4, 4).double(), torch.randn(2, 3, 4, 4)),
         "float32"),
        (lambda: ops().winograd_conv2d(torch.randn(1, 3, 4, 4), torch.randn(2, 3, 3, 3)),
         r"weight must be \[C_out, 3, 4, 4\], got \[2, 3, 3, 3\]"),
        (lambda: ops().winograd_conv2d(torch.randn(1, 3, 5, 4), torch.randn(2, 3, 4, 4)),
         "even"),
        (lambda: ops().winograd_conv_transpose2d(torch.randn(1, 3, 4, 4), torch.randn(2, 3, 4, 4)),
         r"weight must be \[3, C_out, 4, 4\], got \[2, 3, 4, 4\]"),
        (lambda: ops().winograd_conv2d_weight_grad(torch.randn(1, 3, 4, 4), torch.randn(1, 2, 3, 2)),
         "grad_out must be"),
        (lambda: ops().winograd_conv2d(torch.randn(0, 3, 4, 4), torch.randn(2, 3, 4, 4)),
         "empty"),
    ],
)  # fmt: skip
def test_bad_input(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


def test_the_switch_goes_through_the_backend_registry():
    """registry.set_winograd(False) (FASTGEN_WINOGRAD=0 at import) sends an eligible layer to
    aten's convolution, bit for bit; on again, the Winograd kernels take it back."""
    import torch.nn.functional as F

    from fastgen import ops, registry

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 32, 8, 8, generator=generator)  # eligible: >= 32 channels and tiles
    weight = torch.randn(32, 32, 4, 4, generator=generator)
    stock = F.conv_transpose2d(x, weight, None, 2, 1)
    assert registry.winograd
    try:
        registry.set_winograd(False)
        assert torch.equal(ops.conv_transpose2d(x, weight, None, 2, 1), stock)
    finally:
        registry.set_winograd(True)
    fused = ops.conv_transpose2d(x, weight, None, 2, 1)
    assert not torch.equal(fused, stock)
    torch.testing.assert_close(fused, stock, atol=1e-4, rtol=1e-4)
