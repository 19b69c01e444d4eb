#!/usr/bin/env bash
# The device call behind bench/results/h100-pv-in-flight.json (2026-12-07, H100): the patched
# build's whole GPU suite, then TP2 128K chunk-1,024 prefill rows and the 128K executor rows,
# main's binary and the patched one alternating. Binaries are built beforehand on a CPU machine (
# -DCMAKE_CUDA_ARCHITECTURES=90a): main's prefill_bench in .devrun/head, main's executor_bench in
# .devrun/base, and compact_gpu_tests, prefill_bench, executor_bench of a tree with
# sm90-pv-in-flight.patch applied in .devrun/pv; .devrun/lib holds libbenchmark.so.1debian.
# Run as `bash docs/experiments/pv-in-flight-ab.sh` with .devrun carried; the merged file's
# benchmark names carry ':pv_in_flight' on the patched rows and pass:N (tags added before the merge).
set -uo pipefail
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
export LD_LIBRARY_PATH=$PWD/.devrun/lib PATH=/usr/local/cuda/bin:$PATH
R=/tmp/res; rm -rf $R; mkdir -p $R
pack() { tar czf "$OUT/r.tgz" -C /tmp res; }
nvidia-smi --query-gpu=name,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
timeout 240 ./.devrun/pv/compact_gpu_tests -s > $R/pv_gpu_tests.log 2>&1
echo "pv gpu tests exit $? at $(el) s"
grep -E "NOT correct|ERROR|FAILED|test cases|assertions" $R/pv_gpu_tests.log | tail -6; pack
for pass in 1 2; do
  for v in head pv; do
    [ "$(el)" -gt 420 ] && { echo "no time for prefill $v$pass"; continue; }
    timeout 60 ./.devrun/$v/prefill_bench --benchmark_filter='tp2/kv:131072/chunk:1024' \
      --benchmark_out=$R/prefill_${v}_$pass.json --benchmark_out_format=json 2>&1 | grep -E "^BM_" | sed "s/^/$v$pass /" | cut -c1-200
    pack
  done
done
F='BM_PagedFlash/(dense|random:0.10)/tp[12]/kv:131072/chunk:1024/page:16'
for pass in 3 4 5; do
  for v in base pv; do
    [ "$(el)" -gt 480 ] && { echo "no time for $v$pass"; continue; }
    timeout 40 ./.devrun/$v/executor_bench --benchmark_filter="$F" --benchmark_out=$R/ex_${v}_$pass.json \
      --benchmark_out_format=json 2>&1 | grep "^BM_" | sed "s/^/$v$pass /" | cut -c1-130
    pack
  done
done
echo "elapsed $(el) s"
