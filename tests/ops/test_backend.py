"""The backend registry: mode selection, strict mode, one-time fallback warnings."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from helpers import ROOT

from fastgen import _backend, _extension
from fastgen._backend import BackendRegistry


def run_python(code: str, **env_vars) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("FASTGEN_BACKEND", None)
    env.pop("FASTGEN_STRICT", None)
    env.update(env_vars)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def fake_registry(monkeypatch, mode: str = "auto", strict: bool = False) -> BackendRegistry:
    """A registry with one fake op that has a CPU float32/float64 kernel and nothing else."""
    monkeypatch.setenv("FASTGEN_BACKEND", mode)
    monkeypatch.setenv("FASTGEN_STRICT", "1" if strict else "0")
    monkeypatch.setattr(_extension, "LOADED", True)  # the fake op is "native" whether or not built
    registry = BackendRegistry()
    registry.dtypes["fake_op"] = frozenset({torch.float32, torch.float64})
    registry.kernels["fake_op"] = {"cpu": True, "cuda": False}
    return registry


def test_native_when_kernel_exists(monkeypatch):
    registry = fake_registry(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry.use_native("fake_op", torch.randn(2))
    assert registry.native_backends("fake_op") == ["cpu"]


def test_auto_falls_back_with_one_warning_per_reason(monkeypatch):
    registry = fake_registry(monkeypatch)
    half = torch.randn(2).half()
    with pytest.warns(UserWarning, match=r"fake_op: using the PyTorch reference .*torch.float16"):
        assert not registry.use_native("fake_op", half)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call for the same (op, device, dtype) is silent
        assert not registry.use_native("fake_op", half)
    with pytest.warns(UserWarning, match="torch.bfloat16"):  # a new dtype warns again
        assert not registry.use_native("fake_op", half.bfloat16())


def test_strict_raises_for_a_missing_kernel(monkeypatch):
    registry = fake_registry(monkeypatch, strict=True)
    assert registry.strict
    with pytest.raises(RuntimeError, match="fastgen.ops.fake_op: no native kernel: .*float16"):
        registry.use_native("fake_op", torch.randn(2).half())
    assert registry.use_native("fake_op", torch.randn(2))  # present kernels still work


def test_native_mode_raises_and_reference_mode_never_native(monkeypatch):
    registry = fake_registry(monkeypatch, mode="native")
    with pytest.raises(RuntimeError, match="no native kernel"):
        registry.use_native("fake_op", torch.randn(2).half())
    registry = fake_registry(monkeypatch, mode="reference")
    assert not registry.use_native("fake_op", torch.randn(2))


def test_missing_extension_is_the_reason(monkeypatch):
    registry = fake_registry(monkeypatch)
    monkeypatch.setattr(_extension, "LOADED", False)
    monkeypatch.setattr(_extension, "LOAD_ERROR", "ImportError: test")
    assert "extension is not loaded (ImportError: test)" in registry.why_not_native(
        "fake_op", torch.randn(2)
    )


def test_set_backend(monkeypatch):
    registry = fake_registry(monkeypatch)
    registry.set_backend("reference")
    assert not registry.use_native("fake_op", torch.randn(2))
    with pytest.raises(ValueError, match="fastgen.set_backend: mode must be one of .* got 'fast'"):
        registry.set_backend("fast")
    assert _backend.set_backend == _backend.registry.set_backend


def test_env_reference_forces_reference_in_a_fresh_process():
    code = (
        "import torch, fastgen\n"
        "print(fastgen.registry.mode)\n"
        "print(fastgen.info()['backend_mode'])\n"
        # a fake op with a CPU kernel, so the check below holds even before any op registers
        "fastgen._extension.LOADED = True\n"
        "fastgen.registry.dtypes['fake_op'] = frozenset({torch.float32})\n"
        "fastgen.registry.kernels['fake_op'] = {'cpu': True}\n"
        "print([fastgen.registry.use_native(op, torch.randn(2)) for op in fastgen.registry.kernels])\n"
    )
    done = run_python(code, FASTGEN_BACKEND="reference")
    assert done.returncode == 0, done.stderr
    mode, info_mode, used = done.stdout.split("\n")[:3]
    assert mode == info_mode == "reference"
    assert "False" in used and "True" not in used


def test_env_bad_backend_fails_at_import():
    done = run_python("import fastgen", FASTGEN_BACKEND="turbo")
    assert done.returncode != 0
    assert (
        "FASTGEN_BACKEND must be one of auto, reference, native, emulated-cuda, got 'turbo'"
        in done.stderr
    )


def test_env_strict_in_a_fresh_process():
    done = run_python("import fastgen; print(fastgen.registry.strict)", FASTGEN_STRICT="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
