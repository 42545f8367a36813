"""Every common build and install failure says what to do (issue 14's build items)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
from helpers import ROOT

from fastgen import _extension
from fastgen._backend import BackendRegistry


def run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=300)  # fmt: skip


def test_setup_without_torch_prints_the_two_commands_that_work():
    code = ("import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--name']; "
            "exec(compile(open('setup.py').read(), 'setup.py', 'exec'), {'__name__': '__main__'})")  # fmt: skip
    done = run(code)
    assert done.returncode != 0
    assert "No module named 'torch'" in done.stderr
    assert 'pip install --no-build-isolation -e ".[train,test]"' in done.stderr


def test_build_plan_is_printed_and_warns_for_a_cuda_torch_without_nvcc():
    code = """
import importlib.util, torch
spec = importlib.util.spec_from_file_location("fastgen_setup", "setup.py")
setup = importlib.util.module_from_spec(spec); spec.loader.exec_module(setup)
print("ARCHS", setup.DEFAULT_ARCHS)
print(setup.build_plan(False, ""))
torch.version.cuda = "13.0"; setup.CUDA_HOME = None
print(setup.build_plan(False, ""))
"""
    done = run(code, FASTGEN_CUDA="")
    assert done.returncode == 0, done.stderr
    assert "ARCHS 8.0;9.0+PTX" in done.stdout
    assert "fastgen build plan: torch" in done.stdout and "baseline" in done.stdout
    warning = done.stdout.split("WARNING", 1)[-1]
    assert (
        "nvcc was not found" in warning and "CUDA_HOME" in warning and "FASTGEN_CUDA=0" in warning
    )


@pytest.mark.parametrize("capability,archs,expected", [
    ((9, 0), ["8.0", "9.0"], True),
    ((8, 6), ["8.0"], True),          # a cubin runs on later minors of its major
    ((8, 6), ["9.0"], False),
    ((10, 0), ["8.0", "9.0"], False),  # no PTX: nothing for a newer GPU
    ((10, 0), ["8.0", "9.0+PTX"], True),
    ((7, 5), ["8.0", "9.0+PTX"], False),
])  # fmt: skip
def test_kernel_image_rule(capability, archs, expected):
    assert _extension.has_kernel_image(capability, archs) is expected


def test_an_extension_built_against_another_torch_says_how_to_rebuild(monkeypatch):
    monkeypatch.setattr(
        _extension, "build_config", lambda: {"build_torch_version": "0.0.1", "with_cuda": False}
    )
    message = _extension.check_build()
    assert "built against torch 0.0.1" in message and "--no-build-isolation" in message


def test_a_missing_extension_warns_once_not_once_per_op(monkeypatch):
    import torch

    monkeypatch.setattr(_extension, "LOADED", False)
    monkeypatch.setattr(_extension, "LOAD_ERROR", "ImportError: not built")
    monkeypatch.setattr(_extension, "BUILD_PROBLEM", None)
    registry = BackendRegistry()
    for op in ("batch_norm_leaky_relu", "conv2d", "reparameterize"):
        registry.register(op, [torch.float32])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for op in ("batch_norm_leaky_relu", "conv2d", "reparameterize"):
            assert registry.use_native(op, torch.zeros(1)) is False
    assert len(caught) == 1 and "every op runs its PyTorch reference" in str(caught[0].message)


def test_cli_version_info_json_and_a_bad_backend_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "fastgen", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0 and done.stdout.startswith("fastgen ")
    done = subprocess.run(
        [sys.executable, "-m", "fastgen", "info", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    data = json.loads(done.stdout)
    assert data["fastgen"] and "cpu_capability" in data and "ops" in data
    done = subprocess.run([sys.executable, "-m", "fastgen", "info"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "FASTGEN_BACKEND": "turbo"})  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "fastgen info: error: FASTGEN_BACKEND must be one of auto, reference, native, emulated-cuda, got 'turbo'"
    ]


class FakeCudaTensor:
    """What the registry reads of a tensor, for a GPU this machine does not have."""

    device = type("Device", (), {"type": "cuda", "index": 0, "__str__": lambda self: "cuda:0"})()
    is_cuda = True
    dtype = None


def test_a_gpu_without_a_kernel_image_runs_the_reference_with_one_warning(monkeypatch):
    import torch

    monkeypatch.setattr(
        _extension, "build_config", lambda: {"with_cuda": True, "cuda_archs": ["8.0", "9.0"]}
    )
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Tesla T4")
    _extension.kernel_image_problem.cache_clear()
    try:
        message = _extension.kernel_image_problem(0)
        assert "built for 8.0;9.0" in message and "sm_75" in message and "Tesla T4" in message
        assert "TORCH_CUDA_ARCH_LIST=7.5" in message
        monkeypatch.setattr(_extension, "LOADED", True)
        registry = BackendRegistry()
        registry.kernels = {op: {"cuda": True} for op in ("conv2d", "reparameterize")}
        registry.dtypes = {op: frozenset([None]) for op in registry.kernels}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for op in ("conv2d", "reparameterize", "conv2d"):
                assert registry.use_native(op, FakeCudaTensor()) is False
        assert len(caught) == 1
        assert str(caught[0].message).startswith("fastgen: every op on cuda:0 runs its PyTorch")
        registry.strict = True
        with pytest.raises(RuntimeError, match="no kernel image"):
            registry.use_native("conv2d", FakeCudaTensor())
        # a build that has the image: no problem
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (9, 0))
        _extension.kernel_image_problem.cache_clear()
        assert _extension.kernel_image_problem(0) is None
    finally:
        _extension.kernel_image_problem.cache_clear()


def test_info_names_python_compiler_threads_winograd_and_the_gemm(monkeypatch):
    import platform

    import torch

    import fastgen

    monkeypatch.setattr(fastgen.registry, "winograd", False)
    data = fastgen.info()
    assert data["python"] == platform.python_version()
    assert data["threads"] == torch.get_num_threads()
    assert data["winograd"] is False
    assert "gpu_capability" in data and "gpu_has_kernel_image" in data
    if data["extension_loaded"]:
        assert data["compiler"] and data["cpu_capabilities_built"][0] == "baseline"
        assert data["avx512_gemm"] == (data["cpu_capability"] == "avx512")
