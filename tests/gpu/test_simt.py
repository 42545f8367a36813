"""The SIMT emulator (csrc/simt): its self-test kernels, its schedule, and its wiring.

Each bug_ self-test kernel plants one bug of a class the emulator must catch; its clean twin
shows the same kernel done right runs (so an emulator that rejected everything fails here).
"""

from __future__ import annotations

import glob
import os
import re

import pytest
import torch
from conftest import HAS_EMULATED, on_device
from helpers import ROOT

from fastgen import _extension, ops
from fastgen._backend import registry

pytestmark = pytest.mark.skipif(not HAS_EMULATED, reason="the emulated CUDA kernels are not built")


# What each planted bug must be reported as (the message also names the kernel).
BUGS = {
    "bug_read_shared_without_syncthreads": (
        "neighbour_exchange",
        r"race on shared variable 'values'|'values' .* before any thread of the block wrote it",
    ),
    "bug_racy_counter": ("count_threads", r"race on shared variable 'count'"),
    "bug_racy_counter_global": ("count_threads_global", r"race on byte 0 of a 4-byte tensor"),
    "bug_divergent_barrier": (
        "barrier",
        r"(exited while \d+ threads wait at __syncthreads|reached __syncthreads .* after \d+ threads"
        r" of the block exited)",
    ),
    "bug_out_of_bounds_write": (
        "write_index_unguarded",
        r"out-of-bounds write of 4 bytes .* past the end of a 400-byte tensor",
    ),
    "bug_grid_y_70000": ("block_row", r"gridDim \(1, 70000, 1\) exceeds sm_90's limits"),
    "bug_block_of_1025_threads": ("empty_kernel", r"\(1025 threads\) exceeds sm_90's limits"),
    "bug_zero_grid": ("empty_kernel", r"gridDim \(0, 1, 1\) has a zero dimension"),
    "bug_shuffle_with_exited_lanes": (
        "warp_sum",
        r"__shfl_down_sync .* names lane \d+: that lane has exited|exited while lane \d+ waits for it at __shfl_down_sync",
    ),
    "bug_shuffle_in_partial_warp": ("warp_sum", r"names lane 20: that lane does not exist"),
    "bug_uninitialised_shared_read": (
        "uninitialised_shared",
        r"before any thread of the block wrote it",
    ),
    "bug_static_shared_over_48k": (
        "big_static_shared",
        r"static shared memory of 49156 bytes .* 48 KiB",
    ),
    "bug_wmma_in_half_a_warp": (
        "wmma_gemm",
        r"wmma::load_matrix_sync .* that lane has exited|exited while lane \d+ waits for it at wmma::load_matrix_sync",
    ),
    "bug_dynamic_shared_without_opt_in": (
        "empty_kernel",
        r"65536 bytes of dynamic shared memory exceed 49152",
    ),
}

# What each clean kernel computes.
CLEAN = {
    "neighbour_exchange": [float((i + 1) % 64) for i in range(64)],
    "atomic_counter": [64.0],
    "atomic_counter_global": [128.0],  # two blocks of 64
    "uniform_barrier": [float(63 - i) for i in range(64)],
    "guarded_write": [float(i) for i in range(100)],
    "grid_y_65535": [65534.0],
    "warp_shuffle": [float(sum(range(32)))],
    "dynamic_shared_with_opt_in": [float(i) for i in range(64)],
}


# WMMA cases: (M, N, depth) of C = A @ B, A row-major, B column-major (selftest.cpp).
WMMA = {"wmma_half": (16, 16, 48), "wmma_bfloat16": (16, 16, 32), "wmma_tf32": (16, 16, 24),
        "wmma_double": (8, 8, 12)}  # fmt: skip


def emulated():
    return _extension._emulated_cuda


def test_every_case_is_checked():
    names = {name for name, _ in emulated().selftest_cases()}
    assert names == set(BUGS) | set(CLEAN) | set(WMMA)


def matrix_values(count: int, salt: int) -> torch.Tensor:
    index = torch.arange(count, dtype=torch.float64)
    return ((index * (7 + 2 * salt) + salt) % 11 - 5) / 4  # selftest.cpp's matrix_value


@pytest.mark.parametrize("name", sorted(WMMA))
def test_wmma_matrix_product(name):
    m, n, depth = WMMA[name]
    a = matrix_values(m * depth, 0).view(m, depth)
    b = matrix_values(n * depth, 1).view(n, depth).T
    out = torch.tensor(emulated().run_selftest(name), dtype=torch.float64).view(m, n)
    # The inputs are small multiples of 1/4 and the sums stay exact in float32.
    assert torch.equal(out, a @ b)


@pytest.mark.parametrize("name", sorted(BUGS))
@pytest.mark.parametrize("seed", ["0", "7"])
def test_planted_bug_is_caught(name, seed, monkeypatch):
    monkeypatch.setenv("FASTGEN_SIMT_SCHEDULE", seed)
    kernel, pattern = BUGS[name]
    with pytest.raises(
        RuntimeError, match=rf"fastgen\.simt: (launch of )?kernel .*{kernel}\b.*: "
    ) as info:
        emulated().run_selftest(name)
    assert re.search(pattern, str(info.value)), str(info.value)


@pytest.mark.parametrize("name", sorted(CLEAN))
@pytest.mark.parametrize("seed", ["0", "7"])
def test_clean_kernel_runs(name, seed, monkeypatch):
    monkeypatch.setenv("FASTGEN_SIMT_SCHEDULE", seed)
    assert emulated().run_selftest(name) == CLEAN[name]


def test_schedule_seed_changes_the_order_of_unsynchronised_threads(monkeypatch):
    # With the race and initialisation checks off, the missing __syncthreads shows as output
    # that depends on the seed: a thread that runs before its neighbour reads the poison
    # (NaN) the emulator fills shared memory with.
    monkeypatch.setenv("FASTGEN_SIMT_RACECHECK", "0")
    outputs = set()
    for seed in range(4):
        monkeypatch.setenv("FASTGEN_SIMT_SCHEDULE", str(seed))
        out = torch.tensor(emulated().run_selftest("bug_read_shared_without_syncthreads"))
        assert torch.isnan(out).any() and not torch.isnan(out).all()
        outputs.add(tuple(torch.isnan(out).tolist()))
    assert len(outputs) > 1, "different seeds must run the threads in different orders"
    for seed in range(4):
        monkeypatch.setenv("FASTGEN_SIMT_SCHEDULE", str(seed))
        assert emulated().run_selftest("neighbour_exchange") == CLEAN["neighbour_exchange"]


def cuda_registrations() -> set[str]:
    """The op names the .cu files register under the CUDA key."""
    names = set()
    for path in glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True):
        text = open(path).read()
        for block in re.findall(
            r"TORCH_LIBRARY_IMPL\(\s*fastgen\s*,\s*CUDA\s*,\s*\w+\s*\)\s*\{(.*?)\n\}", text, re.S
        ):
            names.update(re.findall(r'\.impl\(\s*"(\w+)"', block))
    return names


def test_every_cuda_kernel_has_its_emulated_twin():
    registered = cuda_registrations()
    assert registered, "no CUDA registrations found in csrc/**/*.cu"
    assert _extension.emulated_ops() == registered
    public = registered & set(registry.kernels)  # the ops fastgen.ops calls (not the backwards)
    assert public
    for op in public:
        assert "emulated-cuda" in registry.native_backends(op), op


def test_no_bare_launches_or_shared_in_cuda_sources():
    # One launch helper (simt::launch) and FASTGEN_SHARED, so the emulated build compiles the
    # very same kernels and launchers.
    for path in glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu*"), recursive=True):
        text = re.sub(r"//.*", "", open(path).read())
        assert "<<<" not in text, f"{path}: launch through simt::launch, not <<<...>>>"
        assert "__shared__" not in text, f"{path}: FASTGEN_SHARED, not __shared__"


def launches(fn) -> int:
    before = emulated().launch_count()
    fn()
    return emulated().launch_count() - before


def test_ops_run_their_cuda_kernels_under_emulation():
    x = torch.randn(4, 6, 5, 5)
    weight = torch.randn(6, 3, 4, 4)
    with on_device("emulated-cuda"):
        assert launches(lambda: ops.batch_norm_leaky_relu(x, None, None, None, None, True)) == 2
        assert launches(lambda: ops.reparameterize_kl(x, x)) == 1
        assert (
            launches(
                lambda: ops.conv_transpose2d(x, weight, torch.randn(3), 2, 1, activation="relu")
            )
            == 1
        )
        assert (
            launches(
                lambda: ops.conv2d(
                    x, weight.transpose(0, 1), torch.randn(3), 2, 1, activation="tanh"
                )
            )
            == 1
        )
        leaf = x.clone().requires_grad_()
        out = ops.batch_norm_leaky_relu(leaf, None, None, None, None, True)
        assert launches(lambda: out.sum().backward()) == 2
    # and not under the other backends
    assert launches(lambda: ops.batch_norm_leaky_relu(x, None, None, None, None, True)) == 0


def test_emulated_mode_falls_back_like_cuda_and_strict_refuses(monkeypatch):
    # The backward from the output has no CUDA kernel: under emulation it runs as torch ops,
    # as on a GPU, and launches nothing.
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    with on_device("emulated-cuda"):
        out = ops.batch_norm_leaky_relu(
            x, None, None, None, None, True, negative_slope=0.2, memory_saving=True
        )
        assert launches(lambda: out.sum().backward()) == 0
        assert registry.why_not_native("batch_norm_leaky_relu_backward_from_output", x) is not None
        monkeypatch.setattr(registry, "strict", True)
        assert registry.use_native("batch_norm_leaky_relu", x)
        with pytest.raises(RuntimeError, match="has no CUDA kernel to emulate"):
            registry.use_native("batch_norm_leaky_relu_backward_from_output", x)


def test_emulated_backend_from_the_environment_in_a_fresh_process():
    import subprocess
    import sys

    code = (
        "import torch, fastgen; from fastgen import _extension as e; "
        "n = e._emulated_cuda.launch_count(); "
        "fastgen.ops.reparameterize(torch.zeros(3, 4), torch.zeros(3, 4)); "
        "print(fastgen.registry.mode, e._emulated_cuda.launch_count() - n)"
    )
    env = dict(os.environ, FASTGEN_BACKEND="emulated-cuda")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["emulated-cuda", "1"]


def test_kernel_errors_reach_python_as_runtime_errors_and_the_emulator_recovers():
    with pytest.raises(RuntimeError, match="out-of-bounds"):
        emulated().run_selftest("bug_out_of_bounds_write")
    assert emulated().run_selftest("guarded_write") == CLEAN["guarded_write"]
