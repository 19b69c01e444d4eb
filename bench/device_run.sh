#!/usr/bin/env bash
# One device-machine call: build, GPU tests, benchmarks, peers, merged results.
#   bench/device_run.sh STAGE...
# Stages: tests, examples, executor, union, mask, prefill, peers (per-chunk SDPA and FlexAttention),
# totals (whole-prompt SDPA sums for the prefill comparison), replay (or all); "build" also
# builds the targets of every stage (so that a later call on the same warm machine only runs).
# Logs and JSON go to $OUT (the device tool's folder; ./out elsewhere). Builds for sm_90a only, to
# save compile time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
stages=" $* "
[[ "$stages" == *" all "* ]] && stages=" tests examples executor union mask prefill peers totals replay "
has() { [[ "$stages" == *" $1 "* ]]; }
build_all=0
has build && build_all=1
wants() { has "$1" || [ $build_all = 1 ]; }  # the stage's targets are built
log="$OUT/device.log"
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv;
  nvcc --version | tail -1; } >>"$log" 2>&1

targets=()
wants tests && targets+=(compact_gpu_tests)
wants examples && targets+=(minimal custom_mask chunked_prefill)
wants executor && targets+=(executor_bench)
wants union && targets+=(union_bench)
wants mask && targets+=(mask_bench)
wants prefill && targets+=(prefill_bench)
wants replay && targets+=(compact_replay compact_tools_tests)
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
if has prefill; then
  # The last chunk's 2D FlashPrefill masks go to $OUT/sel for the FlexAttention peer.
  mkdir -p "$OUT/sel"
  COMPACT_SELECTION_DIR="$OUT/sel" bench prefill_gb ./build-dev/bench/prefill_bench
fi
if has peers; then
  flex="random:0.10"
  ls "$OUT"/sel/selection_*.npy >/dev/null 2>&1 &&
    flex="random:0.10,$OUT/sel/selection_{preset}_{kv_len}_{chunk}.npy"
  for preset in tp2 tp1; do
    PYTHONUNBUFFERED=1 python3 bench/peers.py --preset $preset --kv-lens 32768,65536,131072 \
      --chunk 1024 --flex-selection "$flex" --out "$OUT/peers_$preset.json" 2>&1 | tail -12
  done
fi
if has totals; then
  # Whole-prompt totals (every chunk of the prefill) for the chunked-prefill comparison. All four
  # take about 9 minutes: COMPACT_TOTALS="tp1:131072" (say) runs a subset in a call of its own.
  for spec in ${COMPACT_TOTALS:-tp2:32768 tp2:65536 tp2:131072 tp1:131072}; do
    PYTHONUNBUFFERED=1 python3 bench/peers.py --preset "${spec%%:*}" --prefill-total "${spec##*:}" \
      --chunk 1024 --backends sdpa_flash,sdpa_cudnn --cudnn-modes split,noncausal --no-check \
      --no-kernel-names --reps 3 --warmup 1 \
      --out "$OUT/peers_prefill_${spec%%:*}_${spec##*:}.json" 2>&1 | tail -4
  done
fi
if has replay; then
  ./build-dev/tests/compact_tools_tests >"$OUT/tools_tests.log" 2>&1
  echo "tools tests exit code $?" | tee -a "$log"
  tail -3 "$OUT/tools_tests.log"
  # Device path: every chunk and row through the device policies; sampled rows on the host.
  for t in 32K 128K; do
    timeout 240 ./build-dev/tools/compact_replay --synthetic --tokens $t --sample-rows 32 \
      >"$OUT/replay_$t.log" 2>&1
    echo "replay $t exit code $?" | tee -a "$log"
    grep -A12 "^overall" "$OUT/replay_$t.log" | head -14
  done
fi
echo "done"
