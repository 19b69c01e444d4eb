#!/usr/bin/env bash
# One device-machine call: build, GPU tests, benchmarks, peers, merged results.
#   bench/device_run.sh STAGE...
# Stages: tests, examples, executor, union, mask, prefill, peers, merge (or all). Logs and JSON go to $OUT
# (the device tool's folder; ./out elsewhere). Builds for sm_90a only, to save compile time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
stages=" $* "
[[ "$stages" == *" all "* ]] && stages=" tests examples executor union mask prefill peers merge "
has() { [[ "$stages" == *" $1 "* ]]; }
log="$OUT/device.log"
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv;
  nvcc --version | tail -1; } >>"$log" 2>&1

targets=()
has tests && targets+=(compact_gpu_tests)
has examples && targets+=(minimal custom_mask chunked_prefill)
has executor && targets+=(executor_bench)
has union && targets+=(union_bench)
has mask && targets+=(mask_bench)
has prefill && targets+=(prefill_bench)
if [ ${#targets[@]} -gt 0 ]; then
  cmake -S . -B build-dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCOMPACT_BUILD_TOOLS="${COMPACT_TOOLS:-ON}" >>"$log" 2>&1
  start=$(date +%s)
  known=$(ninja -C build-dev -t targets all 2>/dev/null | cut -d: -f1)
  present=()
  for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$known" && present+=("$t") || echo "no target $t (skipped)" | tee -a "$log"
  done
  if ! cmake --build build-dev -j "$(nproc)" --target "${present[@]}" >"$OUT/build.log" 2>&1; then
    grep -E "error|FAILED" "$OUT/build.log" | head -40
    echo "BUILD FAILED"
  fi
  echo "build: $(( $(date +%s) - start )) s" | tee -a "$log"
fi

bench() {  # bench NAME BINARY [args]: Google Benchmark JSON to $OUT/NAME.json
  local name=$1 bin=$2
  shift 2
  [ -x "$bin" ] || { echo "missing $bin"; return; }
  "$bin" --benchmark_out="$OUT/$name.json" --benchmark_out_format=json "$@" 2>&1 |
    grep -v "^\*\*\*" | tee -a "$log" | tail -40
}

if has tests; then
  ./build-dev/tests/compact_gpu_tests -s >"$OUT/gpu_tests.log" 2>&1
  echo "gpu tests exit code $?" | tee -a "$log"
  grep -E "ERROR|FAILED|failed|worst|rel L2|test cases|assertions" "$OUT/gpu_tests.log" | tail -60
fi
if has examples; then
  for ex in minimal custom_mask chunked_prefill; do
    [ -x "build-dev/examples/$ex" ] && ./build-dev/examples/$ex 2>&1 | tee -a "$log" | tail -15
  done
fi
has executor && bench executor_gb ./build-dev/bench/executor_bench
has union && bench union_gb ./build-dev/bench/union_bench
has mask && bench mask_gb ./build-dev/bench/mask_bench
has prefill && bench prefill_gb ./build-dev/bench/prefill_bench
if has peers; then
  PYTHONUNBUFFERED=1 python3 bench/peers.py --preset tp2 --kv-lens 32768,65536,131072 --chunk 1024 \
    --out "$OUT/peers_tp2.json" 2>&1 | tail -20
  PYTHONUNBUFFERED=1 python3 bench/peers.py --preset tp1 --kv-lens 32768,65536,131072 --chunk 1024 \
    --out "$OUT/peers_tp1.json" 2>&1 | tail -20
fi
echo "done"
