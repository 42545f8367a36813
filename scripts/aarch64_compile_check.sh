#!/usr/bin/env bash
# Compiles every C++ source of the extension for aarch64 with a cross compiler, as setup.py
# builds it there (the portable "baseline" CPU kernels only, no CUDA): object files against
# this machine's torch headers. It shows the sources compile for aarch64; it cannot link or
# run the tests (that needs an aarch64 torch and an aarch64 machine).
#   apt-get install g++-aarch64-linux-gnu && bash scripts/aarch64_compile_check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CXX="${CXX:-aarch64-linux-gnu-g++}"
PY="${PY:-.venv/bin/python}"
TORCH_INCLUDE="$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')"
PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
OUT="${OUT:-$(mktemp -d)}"
common=(-std=c++20 -c -O1 -fPIC -fopenmp -ffp-contract=off -Icsrc -I"$TORCH_INCLUDE"
        -I"$TORCH_INCLUDE/torch/csrc/api/include" -I"$PY_INCLUDE" -DTORCH_API_INCLUDE_EXTENSION_H)
failed=0
for source in $(find csrc -name '*.cpp' | sort); do
  flags=(-DTORCH_EXTENSION_NAME=_C)
  case "$source" in
    *_kernels.cpp) flags+=(-DFASTGEN_CPU_NS=baseline -DFASTGEN_CPU_BASELINE=1) ;;
  esac
  case "$source" in
    csrc/simt/runtime/*.cpp) flags=(-DTORCH_EXTENSION_NAME=_emulated_cuda -DFASTGEN_SIMT_EMULATION=1) ;;
    *_emulated.cpp|csrc/simt/*.cpp)
      flags=(-DTORCH_EXTENSION_NAME=_emulated_cuda -DFASTGEN_SIMT_EMULATION=1 -fsanitize=thread
             --param=tsan-instrument-func-entry-exit=0) ;;
  esac
  object="$OUT/$(echo "$source" | tr / _).o"
  if ! "$CXX" "${common[@]}" "${flags[@]}" "$source" -o "$object" 2> "$object.log"; then
    echo "FAIL $source"; sed -n 1,20p "$object.log"; failed=$((failed + 1))
  fi
done
echo "$(find csrc -name '*.cpp' | wc -l) sources, $failed failed ($("$CXX" --version | head -1))"
exit $((failed > 0))
