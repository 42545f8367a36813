#!/usr/bin/env bash
# The one GPU verification script: build, info, full tests (CUDA included), compute-sanitizer
# (memcheck + racecheck) on a small CUDA subset, CUDA benchmarks. Everything lands in OUT_DIR;
# a short summary is printed last.
#
#   bash scripts/gpu_check.sh OUT_DIR            (or: make gpu-check OUT=OUT_DIR)
#   bash scripts/gpu_check.sh --quick OUT_DIR    (or: QUICK=1 ...): the one ~7-minute device call
#                                                a lent GPU gets (sm_90 only, CUDA tests only with
#                                                capped hypothesis examples, one sanitizer test per
#                                                kernel, benchmarks and a DCGAN step profile capped
#                                                at ~3 minutes together; at most 8 files in OUT_DIR)
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
#   QUICK=1          the quick mode (as --quick)
#   DRY_RUN=1        print the commands instead of running them (to check the script anywhere)
set -uo pipefail  # no -e: a failing stage is recorded and the others still run

QUICK="${QUICK:-0}"
if [ "${1:-}" = "--quick" ]; then
  QUICK=1
  shift
fi
OUT="${1:?usage: scripts/gpu_check.sh [--quick] OUT_DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PY:-python3}"
if [ "$QUICK" = "1" ]; then
  # Budget: build ~90 s, CUDA tests <= 180 s, sanitizers <= 60 s, benchmarks + profile <= 180 s.
  STAGES="${STAGES:-build,info,test,sanitize,bench,train}"
  STAGE_TIMEOUT="${STAGE_TIMEOUT:-180}"
  SANITIZE_TIMEOUT="${SANITIZE_TIMEOUT:-30}"
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
  export FASTGEN_EMULATED="${FASTGEN_EMULATED:-0}"   # the GPU runs the real thing
  export FASTGEN_MAX_EXAMPLES="${FASTGEN_MAX_EXAMPLES:-10}"
  TEST_SELECTION="${TEST_SELECTION:-cuda and not emulated}"
  # One small test per kernel (batch norm, reparameterize, the conv epilogues, the
  # implicit-GEMM engine with its statistics and gradients).
  SANITIZER_TESTS="${SANITIZER_TESTS:-(test_cuda_edge_shapes or (test_cuda_launch_modes_match_the_cpu_kernel and 37 and float32) or (test_cuda_matches_reference and conv_transpose2d and contiguous and -relu and float32) or test_statistics_are_deterministic) and not emulated}"
  # The engine against cuDNN on the generator layers and block, and the matmul rate; no
  # torch.compile provider (its compile time alone would not fit the quick budget).
  BENCH_ARGS="${BENCH_ARGS:---reps 20 --warmup 2 --no-compile --ops conv_transpose2d,conv_transpose_bn_act,matmul}"
  TRAIN_ARGS="${TRAIN_ARGS:---steps 10 --warmup 3 --profile}"
else
  STAGES="${STAGES:-build,info,test,sanitize,bench}"
  STAGE_TIMEOUT="${STAGE_TIMEOUT:-540}"
  SANITIZE_TIMEOUT="${SANITIZE_TIMEOUT:-$STAGE_TIMEOUT}"
  TEST_SELECTION="${TEST_SELECTION:-}"
  SANITIZER_TESTS="${SANITIZER_TESTS:-cuda and not emulated and not compile and not hypothesis and not property and not opcheck}"
  TRAIN_ARGS="${TRAIN_ARGS:-}"
fi
export MAX_JOBS="${MAX_JOBS:-16}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$CUDA_HOME/bin:$PATH"

declare -a SUMMARY=()
want() { [[ ",$STAGES," == *",$1,"* ]]; }
if [ "${DRY_RUN:-0}" = "1" ]; then
  run() { echo "+ $*"; }
else
  run() { "$@"; }
fi
record() { SUMMARY+=("$(printf '%-10s %s' "$1" "$([ "$2" -eq 0 ] && echo ok || echo "FAILED (exit $2)")")"); }

# One file for the machine: GPU, commit, torch.
{
  git rev-parse --short HEAD 2>/dev/null
  date -u +%Y-%m-%dT%H:%MZ
  nvidia-smi 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1
} > "$OUT/machine.txt"

if want build; then
  echo "== build (MAX_JOBS=$MAX_JOBS)"
  FASTGEN_CUDA=1 run "$PY" -m pip install --no-build-isolation --no-deps -v -e . > "$OUT/build.log" 2>&1
  rc=$?; record build $rc
  if [ $rc -ne 0 ]; then tail -40 "$OUT/build.log"; fi
fi

if want info; then
  echo "== info"
  run "$PY" -m fastgen info 2>&1 | tee -a "$OUT/machine.txt"
  record info "${PIPESTATUS[0]}"
fi

if want test; then
  echo "== pytest (${TEST_SELECTION:-all tests, CUDA included}) -> pytest.log"
  run timeout "$STAGE_TIMEOUT" "$PY" -m pytest -q -rs --durations=25 -p no:cacheprovider \
    ${TEST_SELECTION:+-k "$TEST_SELECTION"} tests > "$OUT/pytest.log" 2>&1
  record pytest $?
fi

if want sanitize; then
  # Without the caching allocator every tensor is its own cudaMalloc, so memcheck sees
  # out-of-bounds accesses that would otherwise land inside a larger cached block.
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool -> sanitizer.log"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 run timeout "$SANITIZE_TIMEOUT" compute-sanitizer --tool "$tool" \
      --error-exitcode 1 --target-processes all \
      "$PY" -m pytest -q -x -p no:cacheprovider -k "$SANITIZER_TESTS" tests \
      >> "$OUT/sanitizer.log" 2>&1
    rc=$?
    record "$tool" $rc
    if [ $rc -ne 0 ] && grep -qiE "not supported|unsupported device" "$OUT/sanitizer.log"; then
      echo "note: compute-sanitizer reports the device unsupported (see sanitizer.log)" | tee -a "$OUT/sanitizer.log"
    fi
  done
fi

if want bench; then
  echo "== benchmarks (cuda) -> $OUT/cuda-*.csv"
  # shellcheck disable=SC2086
  run timeout "$STAGE_TIMEOUT" "$PY" -m benchmarks.run --device cuda --out "$OUT" ${BENCH_ARGS:-} \
    > "$OUT/bench.log" 2>&1
  record bench $?
fi

if want train; then
  echo "== fastgen bench train --device cuda (DCGAN 64x64 and the VAE, fused vs stock) -> bench.log"
  # shellcheck disable=SC2086
  run timeout "$STAGE_TIMEOUT" "$PY" -m fastgen bench train --device cuda --out "$OUT" ${TRAIN_ARGS} \
    >> "$OUT/bench.log" 2>&1
  record train $?
fi

echo
echo "================ summary ($(head -1 "$OUT/machine.txt" 2>/dev/null), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
printf '%s\n' "${SUMMARY[@]}"
[ -f "$OUT/pytest.log" ] && echo "pytest:    $(tail -1 "$OUT/pytest.log")"
[ -f "$OUT/sanitizer.log" ] && echo "sanitizer: $(grep -E 'ERROR SUMMARY|passed|failed' "$OUT/sanitizer.log" | tail -4 | tr '\n' ' ')"
[ -f "$OUT/bench.log" ] && grep -E ' fastgen ' "$OUT/bench.log" | head -40
echo "logs and CSVs in $OUT (copy the CSVs to benchmarks/results/ and commit them)"
for line in "${SUMMARY[@]}"; do [[ "$line" == *FAILED* ]] && exit 1; done
exit 0
