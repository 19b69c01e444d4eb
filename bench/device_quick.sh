#!/usr/bin/env bash
# The short device call behind bench/results/h100-executor.json (about 100 s on a fresh machine):
# executor_bench's 128K rows (dense and 10% tables, TP2 and TP1, sm90 and sm80 paths) and the torch
# SDPA flash / cuDNN peers of the same shapes in one run, plus the FlashPrefill/Quest GPU tests
# alone. Merge afterwards with bench/merge_results.py (README "Measured on the device").
#   OUT=out bench/device_quick.sh
set -uo pipefail
export PATH=/usr/local/cuda/bin:$PATH
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/gpu_name.txt"
( nvcc -std=c++20 --expt-relaxed-constexpr -O3 -arch=sm_90a -Iinclude -Itests/support \
    tests/support/doctest_main.cpp tests/mask/test_flash_prefill_gpu.cu -o /tmp/fp_test \
    > "$OUT/fp_build.log" 2>&1; echo "fp build $?" >> "$OUT/fp_build.log" ) &
( cmake -S . -B build-q -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCOMPACT_BUILD_TOOLS=OFF > "$OUT/ex_build.log" 2>&1 &&
  cmake --build build-q --target executor_bench >> "$OUT/ex_build.log" 2>&1; echo "ex build $?" >> "$OUT/ex_build.log" ) &
for preset in tp2 tp1; do
  PYTHONUNBUFFERED=1 python3 bench/peers.py --preset $preset --kv-lens 131072 --chunk 1024 \
    --backends sdpa_flash,sdpa_cudnn --out "$OUT/peers_$preset.json" > "$OUT/peers_$preset.log" 2>&1
done
wait
tail -n 2 "$OUT/fp_build.log" "$OUT/ex_build.log"
./build-q/bench/executor_bench --benchmark_filter='BM_PagedFlash/(dense|random:0.10)/tp[12]/kv:131072/chunk:1024/page:16' \
  --benchmark_out="$OUT/executor_gb.json" --benchmark_out_format=json 2>&1 | grep BM_ | tail -8
grep -h "sdpa_flash:\|sdpa_cudnn:" "$OUT"/peers_tp*.log
timeout 60 /tmp/fp_test > "$OUT/fp_test.log" 2>&1
echo "fp test exit $?"; grep -E "NOT correct|test cases|assertions" "$OUT/fp_test.log" | head
