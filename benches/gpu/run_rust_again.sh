#!/usr/bin/env bash
# Issue #10, a second GPU call in the same session: the Rust half in full plus the cheap part of
# the reference (fwdbwd and dpo in plain torch, no HF peers), compared both with this call's
# reference and with an earlier full run's (REF_DIR, e.g. benches/gpu/results/<date>-<card>-a).
# About 3 minutes on an H200 instead of 7–8 for run.sh. Build first with build.sh, carry target/gpu.
#
#   REF_DIR=benches/gpu/results/2026-11-27-h200-a bash benches/gpu/run_rust_again.sh "$OUT"
set -u
OUT=${1:-gpu-bench-out}
REF_DIR=${REF_DIR:?set REF_DIR to the folder of an earlier full run (gpu_reference.json)}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
TORCH_LIB=$("$PYTHON" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
# The wheel's CUDA runtime too: panacea-shim's graph code (the static decoder) links
# libcudart.so.13 where it was built with CUDA.
CUDA_LIB="$TORCH_LIB/../../nvidia/cu13/lib"
export LD_LIBRARY_PATH="$TORCH_LIB:$CUDA_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
timeout 250 target/gpu/gpu_bench --device cuda --dtype bf16 --sizes full --out "$OUT" > "$OUT/rust.log" 2>&1
echo "gpu_bench exit: $?"
timeout 75 "$PYTHON" scripts/gpu_reference.py --device cuda --dtype bf16 --sizes full --out "$OUT" \
  --only fwdbwd,dpo --no-hf > "$OUT/reference.log" 2>&1
echo "gpu_reference exit: $?"
"$PYTHON" benches/gpu/compare.py "$OUT/gpu_bench.json" "$REF_DIR/gpu_reference.json" \
  --json "$OUT/compare_vs_ref_dir.json" > "$OUT/compare_vs_ref_dir.txt"
"$PYTHON" benches/gpu/compare.py "$OUT/gpu_bench.json" "$OUT/gpu_reference.json" \
  --json "$OUT/compare.json" > "$OUT/compare.txt"
tail -22 "$OUT/compare_vs_ref_dir.txt"
grep -E "fwdbwd|dpo" "$OUT/compare.txt"
