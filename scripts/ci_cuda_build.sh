#!/usr/bin/env bash
# Builds fastgen's CUDA variant on a machine WITHOUT a GPU and checks that every CUDA kernel
# the sources register is really registered under the CUDA dispatch key.
#
#   bash scripts/ci_cuda_build.sh            (or: make cuda-build)
#
# Environment (all optional):
#   CUDA_VENV        venv with a CUDA build of torch (default .venv-cuda; created if missing,
#                    reused if present: point it at an existing one to skip the install)
#   CUDA_TORCH       torch version to install into a new venv (default 2.14.1, CUDA 13.0)
#   CUDA_HOME        CUDA toolkit (default /usr/local/cuda)
#   TORCH_CUDA_ARCH_LIST (default "8.0;9.0+PTX", setup.py's default), MAX_JOBS (default 2)
#   CUDA_BUILD_DIR   where the build happens (default build/cuda-ci)
#   PTXAS_MAX_SPILL  bytes of spill stores or loads per thread a kernel may have (default 16:
#                    with nvcc 13.0 two float16 engine kernels spill 4 bytes on sm_90)
#
# Why a copy: an in-place build writes fastgen/_C*.so and fastgen/_build_config.py, which
# would replace the CPU build that `make test` uses. So the tracked (and untracked, not
# ignored) files are copied to $CUDA_BUILD_DIR/src and built there. The copy keeps a fixed
# path and the files' modification times, and object files live in $CUDA_BUILD_DIR/temp,
# so ninja only recompiles what changed since the last run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CUDA_VENV="${CUDA_VENV:-$ROOT/.venv-cuda}"
CUDA_TORCH="${CUDA_TORCH:-2.14.1}"
BUILD_DIR="${CUDA_BUILD_DIR:-$ROOT/build/cuda-ci}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0+PTX}"
export MAX_JOBS="${MAX_JOBS:-2}"
export FASTGEN_CUDA=1
# ptxas reports every kernel's registers, spills and shared memory (-Xptxas=-v, setup.py):
# scripts/ptxas_report.py prints them after the build and fails on a spill.
export FASTGEN_PTXAS_VERBOSE=1
PTXAS_MAX_SPILL="${PTXAS_MAX_SPILL:-16}"

PY="$CUDA_VENV/bin/python"
if [ ! -x "$PY" ]; then
  echo "== creating $CUDA_VENV"
  python3 -m venv "$CUDA_VENV"
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
  echo "== installing torch==$CUDA_TORCH (CUDA build) into $CUDA_VENV"
  # The machine's pip constraint (torch<=2.14.1) stays in force on purpose.
  "$CUDA_VENV/bin/pip" install -q "torch==$CUDA_TORCH" ninja numpy setuptools wheel
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

echo "== copying sources to $BUILD_DIR/src"
rm -rf "$BUILD_DIR/src"
mkdir -p "$BUILD_DIR/src" "$BUILD_DIR/temp"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' file; do [ -f "$file" ] && printf '%s\0' "$file"; done \
  | tar --null -T - -cf -) | tar -xf - -C "$BUILD_DIR/src"

echo "== building (archs $TORCH_CUDA_ARCH_LIST, MAX_JOBS=$MAX_JOBS)"
cd "$BUILD_DIR/src"
"$PY" setup.py -q build_ext --inplace --build-temp "$BUILD_DIR/temp" 2>&1 | tee "$BUILD_DIR/temp/build.log" \
  | { grep -v -e '^ptxas info' -e 'bytes stack frame' || true; }

echo "== compiling the convolution engine for sm_75 (compile only)"
# The build above covers $TORCH_CUDA_ARCH_LIST (sm_80 and sm_90 by default). Builds for 7.x
# (T4, V100, RTX 20xx, cluster defaults) must work too, and <mma.h> has no bfloat16 or TF32
# WMMA there: compiling the engine's translation unit, the one that names them, for sm_75 with
# the build's nvcc flags shows that they do (csrc/conv/implicit_gemm_cuda.cuh, math_for_arch).
# About 75 s with one nvcc job on a 2-core machine.
sm75_start=$SECONDS
"$PY" - > "$BUILD_DIR/temp/sm_75.flags" <<'EOF_FLAGS'
import glob
import os

import torch
from torch.utils import cpp_extension

site = os.path.dirname(os.path.dirname(torch.__file__))
nvidia = sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
cuda = os.path.join(os.environ["CUDA_HOME"], "include")
for path in ["csrc", *cpp_extension.include_paths(), cuda, *nvidia]:
    print(f"-I{path}")
for flag in cpp_extension.COMMON_NVCC_FLAGS:
    print(flag)
print(f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
EOF_FLAGS
mapfile -t SM75_FLAGS < "$BUILD_DIR/temp/sm_75.flags"
"$CUDA_HOME/bin/nvcc" -c csrc/conv/implicit_gemm_cuda.cu -o "$BUILD_DIR/temp/implicit_gemm_cuda.sm_75.o" \
  -gencode arch=compute_75,code=sm_75 -O3 -std=c++20 --expt-relaxed-constexpr --fmad=false \
  -DFASTGEN_WITH_CUDA=1 -Xcompiler -fPIC -Xptxas -v "${SM75_FLAGS[@]}" > "$BUILD_DIR/temp/sm_75.log" 2>&1 \
  || { cat "$BUILD_DIR/temp/sm_75.log"; exit 1; }
echo "   sm_75 engine compile: $((SECONDS - sm75_start)) s"

echo "== ptxas: registers, shared memory and spills per kernel (fails on a spill > $PTXAS_MAX_SPILL B)"
# From the compiles above, no new ones: the build's objects (sm_80/sm_90 by default; ninja keeps
# the figures of objects it did not recompile in $BUILD_DIR/temp/ptxas) and the sm_75 engine.
ptxas_start=$SECONDS
mkdir -p "$BUILD_DIR/temp/ptxas"
cp "$BUILD_DIR/temp/sm_75.log" "$BUILD_DIR/temp/ptxas/implicit_gemm_cuda.sm_75.o.ptxas"
"$PY" scripts/ptxas_report.py --split-ninja "$BUILD_DIR/temp/ptxas" --max-spill "$PTXAS_MAX_SPILL" \
  "$BUILD_DIR/temp/build.log"
echo "   ptxas report: $((SECONDS - ptxas_start)) s"

echo "== checking CUDA registrations"
PYTHONPATH="$BUILD_DIR/src" "$PY" - <<'EOF'
import glob
import re
import sys

import torch

import fastgen
from fastgen import _extension

if not _extension.LOADED:
    sys.exit(f"FAIL: the extension did not load: {_extension.LOAD_ERROR}")
if not fastgen._extension._C.with_cuda:
    sys.exit("FAIL: the extension was built without CUDA")
print(f"fastgen from {fastgen.__file__}")

BLOCK = re.compile(r"TORCH_LIBRARY_IMPL\(\s*fastgen\s*,\s*CUDA\s*,\s*(\w+)\s*\)\s*\{")


def block_body(text: str, start: int) -> str:
    """The text of the {...} block opening just before `start`, braces balanced."""
    depth = 1
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start:index]
    raise SystemExit("FAIL: unbalanced braces in a TORCH_LIBRARY_IMPL block")


expected = []  # (file, op name)
sources = sorted(glob.glob("csrc/**/*.cu", recursive=True) + glob.glob("csrc/**/*.cpp", recursive=True))
for path in sources:
    text = open(path).read()
    for match in BLOCK.finditer(text):
        library = match.group(1)
        body = block_body(text, match.end())
        names = re.findall(rf'\b{library}\.impl\(\s*"([\w.]+)"', body)
        if not names:
            print(f"warning: {path}: a CUDA TORCH_LIBRARY_IMPL block with no {library}.impl(...)")
        expected += [(path, name) for name in names]

missing = [
    (path, name)
    for path, name in expected
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"fastgen::{name}", "CUDA")
]
print(f"{len(sources)} source files, {len(expected)} CUDA kernel registrations found")
for path, name in expected:
    print(f"  {'MISSING' if (path, name) in missing else 'ok':8s} fastgen::{name:36s} ({path})")
if missing:
    sys.exit(f"FAIL: {len(missing)} CUDA kernel(s) declared in the sources are not registered")
print("OK")
EOF

echo "== python -m fastgen info"
PYTHONPATH="$BUILD_DIR/src" "$PY" -m fastgen info
