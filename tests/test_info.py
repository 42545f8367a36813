"""fastgen.info() and `python -m fastgen info`."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import torch
from helpers import ROOT

import fastgen
from fastgen._backend import DEVICE_KEYS, EMULATED, MODES
from fastgen._info import format_info

KEYS = {
    "fastgen", "torch", "torch_cuda", "cuda_available", "device", "extension_loaded",
    "extension_error", "built_with_cuda", "cuda_archs", "built_against_torch", "emulated_cuda_loaded",
    "emulated_cuda_error", "backend_mode", "heap", "winograd_bf16_products", "ops",
}  # fmt: skip
OPS = {"batch_norm_leaky_relu", "conv2d", "conv_transpose2d", "reparameterize"}


def test_info_keys_and_values():
    data = fastgen.info()
    assert set(data) >= KEYS, f"missing: {KEYS - set(data)}"
    assert data["fastgen"] == fastgen.__version__
    assert data["torch"] == torch.__version__
    assert data["backend_mode"] in MODES
    assert data["cuda_available"] == torch.cuda.is_available()
    assert data["extension_loaded"] == (data["extension_error"] is None)
    assert data["emulated_cuda_loaded"] == (data["emulated_cuda_error"] is None)
    for op, backends in data["ops"].items():
        assert set(backends) <= set(DEVICE_KEYS) | {EMULATED}, (op, backends)
        if data["emulated_cuda_loaded"] and data["built_with_cuda"]:
            # every op with a CUDA kernel runs it under emulation too (same source)
            assert ("cuda" in backends) == (EMULATED in backends), (op, backends)


def test_info_lists_every_op_with_a_native_cpu_kernel():
    data = fastgen.info()
    assert set(data["ops"]) >= OPS
    if data["extension_loaded"]:
        assert data["built_against_torch"] == torch.__version__, "extension built for another torch"
        for op in OPS:
            assert "cpu" in data["ops"][op], f"fastgen::{op} has no CPU kernel"
            assert EMULATED in data["ops"][op], f"fastgen::{op} has no emulated CUDA kernel"


def test_format_info_mentions_everything():
    text = format_info()
    for key in KEYS - {"ops"}:
        assert key in text
    assert "native backends:" in text
    for op in fastgen.info()["ops"]:
        assert op in text


def test_cli_info_subprocess():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-m", "fastgen", "info"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(rf"^fastgen +{re.escape(fastgen.__version__)}$", done.stdout, re.M), (
        done.stdout
    )
    assert re.search(rf"^torch +{re.escape(torch.__version__)}$", done.stdout, re.M), done.stdout
    assert "native backends:" in done.stdout
    # the command imports the library lazily: every op must still be listed
    listed = done.stdout.split("native backends:", 1)[1]
    for op in ("batch_norm_leaky_relu", "conv2d", "conv_transpose2d", "reparameterize"):
        assert re.search(rf"^  {op} +cpu", listed, re.M), listed


def test_info_says_the_opt_in_and_heap_settings(monkeypatch):
    monkeypatch.delenv("FASTGEN_HEAP", raising=False)
    monkeypatch.delenv("FASTGEN_WINOGRAD_BF16", raising=False)
    data = fastgen.info()
    assert data["heap"] == "keep"
    if data["extension_loaded"]:
        assert data["winograd_bf16_products"].startswith("off (opt-in")
        monkeypatch.setenv("FASTGEN_WINOGRAD_BF16", "1")
        has = data["cpu_capability"] == "avx512" and "avx512bf16" in data["cpu_features"]
        assert (fastgen.info()["winograd_bf16_products"] == "on") == has
    monkeypatch.setenv("FASTGEN_HEAP", "default")
    assert fastgen.info()["heap"] == "default"
