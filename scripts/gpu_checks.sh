#!/usr/bin/env bash
# Everything only a GPU can show, in one run (H100/H200, torch with CUDA, Triton; no PyAV or
# TensorRT needed). Results go to $OUT (or ./gpu-results): the Triton kernel compiled and
# tested for real, its speed against SDPA at the real shapes, and the 14B DiT step on the
# torch CUDA path with random weights, against the official step.
#   bash scripts/gpu_checks.sh            # about 6-8 minutes on one H100
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# sama_rt.kernels / .export / .engines are sub-packages mapped by setup.py; install the
# tree in place without touching the machine's torch or Triton.
python -m pip install -q --no-deps --no-build-isolation -e . > "$out/install.txt" 2>&1 || cat "$out/install.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$out/gpu.csv" 2>&1
python -m sama_rt info --json > "$out/info.json" 2>&1
timeout 240 python -m pytest -q tests/kernels tests/models/test_attention.py 2>&1 | tail -n 25 | tee "$out/kernel_tests.txt"
timeout 240 python benchmarks/attention.py --json > "$out/attention.json" 2> "$out/attention.err"
tail -n 5 "$out/attention.err"
for frames in 49 81; do
  timeout 300 python -m sama_rt bench --config sama-14b --frames "$frames" --resolution 480x832 --steps 2 \
      --warmup 1 --json > "$out/bench_14b_${frames}.json" 2> "$out/bench_14b_${frames}.err"
  tail -n 3 "$out/bench_14b_${frames}.err"
done
timeout 300 python -m sama_rt bench --config sama-14b --frames 49 --resolution 480x832 --steps 2 --warmup 1 \
    --attention sdpa --compare-reference --json > "$out/bench_14b_49_sdpa_ref.json" 2> "$out/bench_14b_49_sdpa_ref.err"
tail -n 3 "$out/bench_14b_49_sdpa_ref.err"
ls -la "$out"
