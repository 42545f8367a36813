#!/usr/bin/env bash
# The one GPU verification script: build, info, full tests (CUDA included), compute-sanitizer
# (memcheck + racecheck) on a small CUDA subset, CUDA benchmarks. Everything lands in OUT_DIR;
# a short summary is printed last.
#
#   bash scripts/gpu_check.sh OUT_DIR            (or: make gpu-check OUT=OUT_DIR)
#
# For the GPU machine (torch 2.11 + CUDA 13.0 on python3, no network): it builds against the
# machine's own torch and never lets pip touch torch (--no-deps --no-build-isolation).
#
# Environment (optional):
#   STAGES           comma-separated subset of build,info,test,sanitize,bench (default: all),
#                    so a session with a per-command time limit can split the work
#   SANITIZER_TESTS  pytest -k expression for the sanitizer subset
#                    (default: "cuda and not compile and not hypothesis and not property and not opcheck")
#   STAGE_TIMEOUT    seconds per test/sanitizer/bench stage (default 540)
#   BENCH_ARGS       extra arguments for python -m benchmarks.run (e.g. "--ops conv_transpose2d")
set -uo pipefail  # no -e: a failing stage is recorded and the others still run

OUT="${1:?usage: scripts/gpu_check.sh OUT_DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PY:-python3}"
STAGES="${STAGES:-build,info,test,sanitize,bench}"
STAGE_TIMEOUT="${STAGE_TIMEOUT:-540}"
SANITIZER_TESTS="${SANITIZER_TESTS:-cuda and not compile and not hypothesis and not property and not opcheck}"
export MAX_JOBS="${MAX_JOBS:-16}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$CUDA_HOME/bin:$PATH"

declare -a SUMMARY=()
want() { [[ ",$STAGES," == *",$1,"* ]]; }
record() { SUMMARY+=("$(printf '%-10s %s' "$1" "$([ "$2" -eq 0 ] && echo ok || echo "FAILED (exit $2)")")"); }

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
git rev-parse --short HEAD > "$OUT/commit.txt" 2>/dev/null

if want build; then
  echo "== build (MAX_JOBS=$MAX_JOBS)"
  FASTGEN_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps -v -e . > "$OUT/build.log" 2>&1
  rc=$?; record build $rc
  if [ $rc -ne 0 ]; then tail -40 "$OUT/build.log"; fi
fi

if want info; then
  echo "== info"
  "$PY" -m fastgen info 2>&1 | tee "$OUT/info.txt"
  record info "${PIPESTATUS[0]}"
fi

if want test; then
  echo "== pytest (all tests, CUDA included) -> pytest.log"
  timeout "$STAGE_TIMEOUT" "$PY" -m pytest -q -rs --durations=25 tests > "$OUT/pytest.log" 2>&1
  record pytest $?
fi

if want sanitize; then
  # Without the caching allocator every tensor is its own cudaMalloc, so memcheck sees
  # out-of-bounds accesses that would otherwise land inside a larger cached block.
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool -> sanitizer-$tool.log"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "$STAGE_TIMEOUT" compute-sanitizer --tool "$tool" \
      --error-exitcode 1 --target-processes all \
      "$PY" -m pytest -q -x -p no:cacheprovider -k "$SANITIZER_TESTS" tests \
      > "$OUT/sanitizer-$tool.log" 2>&1
    record "$tool" $?
  done
fi

if want bench; then
  echo "== benchmarks (cuda) -> $OUT/cuda-*.csv"
  # shellcheck disable=SC2086
  timeout "$STAGE_TIMEOUT" "$PY" -m benchmarks.run --device cuda --out "$OUT" ${BENCH_ARGS:-} \
    > "$OUT/bench.log" 2>&1
  record bench $?
fi

echo
echo "================ summary ($(cat "$OUT/commit.txt" 2>/dev/null), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
printf '%s\n' "${SUMMARY[@]}"
[ -f "$OUT/pytest.log" ] && echo "pytest:    $(tail -1 "$OUT/pytest.log")"
for tool in memcheck racecheck; do
  [ -f "$OUT/sanitizer-$tool.log" ] && echo "$tool: $(grep -E 'ERROR SUMMARY|passed|failed' "$OUT/sanitizer-$tool.log" | tail -2 | tr '\n' ' ')"
done
[ -f "$OUT/bench.log" ] && grep -E ' fastgen ' "$OUT/bench.log" | head -40
echo "logs and CSVs in $OUT (copy the CSVs to benchmarks/results/ and commit them)"
for line in "${SUMMARY[@]}"; do [[ "$line" == *FAILED* ]] && exit 1; done
exit 0
